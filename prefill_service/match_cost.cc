#include "prefill_service/match_cost.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace nanoserve {
namespace {

constexpr char kProbeSalt[] = "nanoserve-prefill-match-probe";

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Milliseconds of one-prompt prefills of `tokens` tokens: the median of
// 5 runs after one untimed.
absl::StatusOr<double> PrefillMs(const Gpt2Model& model, int64_t tokens, int64_t chunk,
                                 KeptPrefillRows* kept) {
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::vector<int>> prompts(1);
  for (int64_t i = 0; i < tokens; ++i)
    prompts[0].push_back(static_cast<int>((i * 7919 + 13) % vocab));
  const std::vector<SamplingOptions> sampling(1);  // greedy: the host copy waits for the pass
  PrefillAndSampleOptions options;
  options.chunk = chunk;
  options.kept = kept;
  std::vector<double> ms;
  for (int run = 0; run < 6; ++run) {
    const absl::Time start = absl::Now();
    absl::StatusOr<SampledPrefill> out =
        PrefillAndSample(model, /*store=*/nullptr, prompts, sampling, options);
    if (!out.ok()) return out.status();
    if (run > 0) ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  return Median(ms);
}

}  // namespace

absl::StatusOr<MatchCost> MeasureMatchCost(const Gpt2Model& model, PrefixStore& store,
                                           int64_t chunk, KeptPrefillRows* kept) {
  absl::StatusOr<PageLayout> layout = store.Layout();
  if (!layout.ok()) return layout.status();
  const int64_t n_positions = model.config().n_positions;
  const int64_t page = std::min<int64_t>(layout->page_size, n_positions);
  std::vector<int32_t> probe;
  for (int64_t i = 0; i < page; ++i) {
    probe.push_back(static_cast<int32_t>((i * 104729 + 7) % model.config().vocab_size));
  }
  const PrefixStore::MatchQuery query{absl::MakeConstSpan(probe), kProbeSalt};
  std::vector<double> match_ms;
  for (int k = 0; k < 7; ++k) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::vector<PrefixStore::Match>> matches = store.MatchPrefixes({query});
    match_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    if (!matches.ok()) return matches.status();
    for (const PrefixStore::Match& m : *matches) store.Release(m.lease_id).IgnoreError();
  }
  MatchCost cost;
  cost.match_ms = Median(match_ms);
  const int64_t longer = std::min<int64_t>(page + 256, n_positions);
  absl::StatusOr<double> short_ms = PrefillMs(model, page, chunk, kept);
  if (!short_ms.ok()) return short_ms.status();
  absl::StatusOr<double> long_ms = PrefillMs(model, longer, chunk, kept);
  if (!long_ms.ok()) return long_ms.status();
  cost.token_us = longer > page ? (*long_ms - *short_ms) * 1000 / (longer - page) : 0;
  cost.min_tokens =
      cost.token_us > 0
          ? std::min<int64_t>(n_positions,
                              static_cast<int64_t>(std::ceil(cost.match_ms * 1000 / cost.token_us)))
          : n_positions;
  return cost;
}

}  // namespace nanoserve
