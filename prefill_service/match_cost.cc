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

absl::StatusOr<double> MeasurePromptTokenUs(const Gpt2Model& model, int64_t chunk,
                                            KeptPrefillRows* kept) {
  const int64_t n_positions = model.config().n_positions;
  const int64_t base = std::min<int64_t>(16, n_positions);
  const int64_t longer = std::min<int64_t>(base + 256, n_positions);
  if (longer <= base) return 0.0;
  absl::StatusOr<double> short_ms = PrefillMs(model, base, chunk, kept);
  if (!short_ms.ok()) return short_ms.status();
  absl::StatusOr<double> long_ms = PrefillMs(model, longer, chunk, kept);
  if (!long_ms.ok()) return long_ms.status();
  return (*long_ms - *short_ms) * 1000 / static_cast<double>(longer - base);
}

absl::StatusOr<double> MeasureMatchMs(const Gpt2Model& model, PrefixStore& store,
                                      absl::Duration idle) {
  absl::StatusOr<PageLayout> layout = store.Layout();
  if (!layout.ok()) return layout.status();
  std::vector<int32_t> probe;
  for (int64_t i = 0; i < layout->page_size; ++i) {
    probe.push_back(static_cast<int32_t>((i * 104729 + 7) % model.config().vocab_size));
  }
  const PrefixStore::MatchQuery query{absl::MakeConstSpan(probe), kProbeSalt};
  std::vector<double> match_ms;
  for (int k = 0; k < 7; ++k) {
    absl::SleepFor(idle);
    const absl::Time start = absl::Now();
    absl::StatusOr<std::vector<PrefixStore::Match>> matches = store.MatchPrefixes({query});
    match_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    if (!matches.ok()) return matches.status();
    for (const PrefixStore::Match& m : *matches) store.Release(m.lease_id).IgnoreError();
  }
  return Median(match_ms);
}

int64_t MatchMinTokens(double match_ms, double token_us, int64_t n_positions) {
  if (token_us <= 0) return n_positions;
  return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(match_ms * 1000 / token_us)), 0,
                             n_positions);
}

}  // namespace nanoserve
