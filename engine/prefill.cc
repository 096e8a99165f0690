#include "engine/prefill.h"

#include <algorithm>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/types/span.h"
#include "base/first_token_trace.h"
#include "base/torch_status.h"

namespace nanoserve {
namespace {

const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& value) {
  return value.status();
}

// Runs rows [row_begin, row_begin + count) whose prompts (rows_prompts[i]
// for row row_begin + i) all have `left` tokens beyond their cached lengths.
// Returns (count, V) logits.
torch::Tensor PrefillRows(const Gpt2Model& model, KvCache& cache, int64_t row_begin,
                          absl::Span<const std::vector<int>* const> rows_prompts, int64_t left,
                          int64_t chunk) {
  const int64_t count = static_cast<int64_t>(rows_prompts.size());
  if (chunk <= 0) chunk = left;
  torch::Tensor hidden;  // (count, T, C) of the last chunk
  for (int64_t done = 0; done < left; done += chunk) {
    const int64_t len = std::min(chunk, left - done);
    std::vector<int64_t> ids, positions;
    ids.reserve(count * len);
    positions.reserve(count * len);
    for (int64_t i = 0; i < count; ++i) {
      const std::vector<int>& prompt = *rows_prompts[i];
      const int64_t begin = cache.length(row_begin + i);
      ids.insert(ids.end(), prompt.begin() + begin, prompt.begin() + begin + len);
      for (int64_t p = begin; p < begin + len; ++p) positions.push_back(p);
    }
    hidden = model.Forward(torch::tensor(ids, torch::kLong).view({count, len}),
                           torch::tensor(positions, torch::kLong).view({count, len}),
                           {&cache, row_begin});
  }
  return model.Logits(hidden.select(1, hidden.size(1) - 1));  // (count, V)
}

}  // namespace

torch::Tensor PrefillRow(const Gpt2Model& model, KvCache& cache, int64_t row,
                         const std::vector<int>& prompt, int64_t chunk) {
  const int64_t n = static_cast<int64_t>(prompt.size());
  TORCH_CHECK(cache.length(row) < n, "PrefillRow: nothing left to prefill");
  const std::vector<int>* rows_prompts[] = {&prompt};
  return PrefillRows(model, cache, row, rows_prompts, n - cache.length(row), chunk);
}

std::vector<torch::Tensor> PrefillBatch(const Gpt2Model& model, KvCache& cache,
                                        const std::vector<std::vector<int>>& prompts, int64_t chunk,
                                        int64_t row_begin) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  TORCH_CHECK(row_begin >= 0 && row_begin + B <= cache.batch(), "PrefillBatch: rows ", row_begin,
              "..", row_begin + B, " outside the cache's ", cache.batch());
  auto left = [&](int64_t r) {
    return static_cast<int64_t>(prompts[r].size()) - cache.length(row_begin + r);
  };
  for (int64_t r = 0; r < B; ++r) TORCH_CHECK(left(r) > 0, "PrefillBatch: row ", r, " is full");
  std::vector<torch::Tensor> logits(B);
  for (int64_t r = 0; r < B;) {
    const int64_t n = left(r);
    const int64_t per_pass = std::min(chunk > 0 ? chunk : n, n);
    const int64_t max_rows = std::max<int64_t>(1, kMaxPrefillBatchTokens / per_pass);
    int64_t end = r + 1;
    while (end < B && end - r < max_rows && left(end) == n) ++end;
    std::vector<const std::vector<int>*> rows_prompts;
    for (int64_t i = r; i < end; ++i) rows_prompts.push_back(&prompts[i]);
    torch::Tensor group = PrefillRows(model, cache, row_begin + r, rows_prompts, n, chunk);
    for (int64_t i = r; i < end; ++i) logits[i] = group.narrow(0, i - r, 1);  // (1, V)
    r = end;
  }
  return logits;
}

std::vector<torch::Tensor> PrefillWith(DecodeStep* step, const Gpt2Model& model, KvCache& cache,
                                       const std::vector<std::vector<int>>& prompts, int64_t chunk,
                                       int64_t row_begin) {
  if (step != nullptr) return step->Prefill(prompts, row_begin, chunk);
  return PrefillBatch(model, cache, prompts, chunk, row_begin);
}

template <typename F>
auto PrefixPrefill::StoreCall(PrefixPrefillResult& result, F&& call) {
  const absl::Time start = absl::Now();
  auto out = call();
  result.store_ms += absl::ToDoubleMilliseconds(absl::Now() - start);
  const absl::Status& status = StatusOf(out);
  if (!status.ok() && result.store_status.ok()) result.store_status = status;
  return out;
}

int64_t PrefixPrefill::UsablePageSize(PrefixPrefillResult& result) {
  absl::StatusOr<PageLayout> layout = StoreCall(result, [&] { return store_.Layout(); });
  if (!layout.ok()) return 0;
  const PageLayout ours = KvPageLayout(model_.config(), model_.options().dtype, layout->page_size);
  if (*layout != ours) {
    result.store_status = absl::FailedPreconditionError(absl::StrCat(
        "the store's layout ", layout->ToString(), " is not this model's ", ours.ToString()));
    return 0;
  }
  return layout->page_size;
}

std::vector<size_t> PrefixPrefill::LexicographicOrder(const Batch& batch) {
  const std::vector<std::vector<int>>& prompts = batch.prompts;
  std::vector<size_t> order(prompts.size());
  std::iota(order.begin(), order.end(), 0);
  // Grouped by namespace: prompts of two namespaces share no branch point.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (batch.salt(a) != batch.salt(b)) return batch.salt(a) < batch.salt(b);
    return prompts[a] < prompts[b];
  });
  return order;
}

int64_t PrefixPrefill::ReusableTokens(const Batch& batch, int64_t page_size) {
  const std::vector<std::vector<int>>& prompts = batch.prompts;
  // A match covers whole pages of at most len - 1 tokens.
  auto whole = [&](size_t r) {
    return (static_cast<int64_t>(prompts[r].size()) - 1) / page_size * page_size;
  };
  int64_t matchable = 0;
  for (size_t r = 0; r < prompts.size(); ++r) matchable += whole(r);
  if (matchable == 0) return 0;
  // Prompts sharing a page compute it once through the store's branch
  // points, whatever the store holds now: all of it counts.
  const std::vector<size_t> order = LexicographicOrder(batch);
  for (size_t i = 1; i < order.size(); ++i) {
    const size_t a = order[i - 1], b = order[i];
    const int64_t page = std::min({page_size, whole(a), whole(b)});
    if (page == page_size && batch.salt(a) == batch.salt(b) &&
        std::equal(prompts[a].begin(), prompts[a].begin() + page_size, prompts[b].begin())) {
      return matchable;
    }
  }
  int64_t held = 0;
  for (size_t r = 0; r < prompts.size(); ++r) {
    if (whole(r) == 0) continue;
    const std::optional<int64_t> hint =
        store_.CachedTokensHint(absl::MakeConstSpan(prompts[r].data(), whole(r)), batch.salt(r));
    held += hint.has_value() ? std::min(*hint, whole(r)) : whole(r);
  }
  return held;
}

bool PrefixPrefill::ComputeBranchPoints(const Batch& batch, int64_t page_size, KvCache& cache,
                                        PrefixPrefillResult& result) {
  const std::vector<std::vector<int>>& prompts = batch.prompts;
  const size_t n = prompts.size();
  const std::vector<size_t> order = LexicographicOrder(batch);
  auto common = [&](size_t a, size_t b) -> int64_t {
    if (batch.salt(a) != batch.salt(b)) return 0;
    const auto& x = prompts[a];
    const auto& y = prompts[b];
    return static_cast<int64_t>(
        std::mismatch(x.begin(), x.begin() + std::min(x.size(), y.size()), y.begin()).first -
        x.begin());
  };
  std::vector<std::pair<int64_t, size_t>> branch_points;  // (length, prompt)
  for (size_t i = 0; i < n; ++i) {
    int64_t shared = 0;
    if (i > 0) shared = std::max(shared, common(order[i], order[i - 1]));
    if (i + 1 < n) shared = std::max(shared, common(order[i], order[i + 1]));
    shared = std::min<int64_t>(shared, prompts[order[i]].size() - 1);
    shared = shared / page_size * page_size;
    if (shared > 0) branch_points.emplace_back(shared, order[i]);
  }
  std::stable_sort(branch_points.begin(), branch_points.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < branch_points.size(); ++i) {
    // Not a structured binding: lambdas below capture them (C++20 only).
    const int64_t length = branch_points[i].first;
    const size_t r = branch_points[i].second;
    const std::vector<int>& prompt = prompts[r];
    // Neighbours in the walk with the same branch point: computed once.
    const size_t previous = i > 0 ? branch_points[i - 1].second : r;
    if (i > 0 && branch_points[i - 1].first == length && batch.salt(previous) == batch.salt(r) &&
        std::equal(prompt.begin(), prompt.begin() + length, prompts[previous].begin())) {
      continue;
    }
    const int64_t row = static_cast<int64_t>(r);
    const std::vector<int> prefix(prompt.begin(), prompt.begin() + length);
    auto match = StoreCall(result, [&] { return store_.MatchPrefix(prefix, batch.salt(r)); });
    if (!match.ok()) return false;
    absl::Cleanup release = [&] { store_.Release(match->lease_id).IgnoreError(); };
    if (match->matched_tokens == length) continue;  // cached already
    cache.Reset(row);
    const PrefixStore::LeasedRow load{row, match->lease_id, match->matched_tokens,
                                      match->pool_pages};
    if (!StoreCall(result, [&] { return store_.Load({load}, cache.tables()); }).ok()) return false;
    PrefixStore::RowTokens store{row, prefix};
    store.cache_salt = batch.salt(r);
    if (store_.UsesBaseLeases()) {
      store.base_lease_id = match->lease_id;
      store.base_tokens = match->matched_tokens;
      store.base_matched = true;
    } else {
      std::move(release).Invoke();
    }
    result.computed_tokens += length - cache.length(row);
    PrefillWith(step_, model_, cache, {prefix}, chunk_, row);
    auto stored =
        StoreCall(result, [&] { return store_.Store({store}, cache.tables(), /*pin=*/false, ""); });
    if (!stored.ok()) return false;
  }
  return true;
}

bool PrefixPrefill::LoadPrefixes(const Batch& batch, int64_t page_size, bool ask, KvCache& cache,
                                 PrefixPrefillResult& result,
                                 std::vector<PrefixStore::LeasedRow>& loads) {
  const std::vector<std::vector<int>>& prompts = batch.prompts;
  // Rows the store's page index serves take their prefixes without a
  // lease or a round trip (PrefixStore::LoadUnleasedRows), asked or not; the
  // rest are matched where asked, every row's in one call.
  std::vector<PrefixStore::MatchQuery> queries;
  std::vector<size_t> asked_rows;
  // On a store's failure every row is computed in full instead.
  auto reuse_nothing = [&] {
    for (size_t r = 0; r < prompts.size(); ++r) cache.Reset(r);
    result.reused_tokens.assign(prompts.size(), 0);
    result.unleased_rows = 0;
  };
  loads.resize(prompts.size());
  std::vector<PrefixStore::UnleasedLoad> unleased(prompts.size());
  for (size_t r = 0; r < prompts.size(); ++r) {
    loads[r].row = static_cast<int64_t>(r);
    unleased[r] = {loads[r].row, absl::MakeConstSpan(prompts[r].data(), prompts[r].size() - 1),
                   batch.salt(r)};
  }
  const std::vector<int64_t> taken = store_.LoadUnleasedRows(unleased, cache.tables());
  for (size_t r = 0; r < prompts.size(); ++r) {
    const absl::Span<const int32_t> tokens = unleased[r].tokens;
    loads[r].tokens = taken[r];
    if (loads[r].tokens > 0) {
      result.reused_tokens[r] = loads[r].tokens;
      ++result.unleased_rows;
      continue;
    }
    if (!ask) continue;
    queries.push_back({tokens, batch.salt(r)});
    asked_rows.push_back(r);
  }
  TraceFirstToken("prefill_unleased_loaded");
  if (queries.empty()) return true;
  const absl::Time asked = absl::Now();
  result.match_called = true;
  TraceFirstToken("prefill_match_asked");
  auto matches = StoreCall(result, [&] { return store_.MatchPrefixes(queries); });
  TraceFirstToken("prefill_match_answered");
  result.match_ms = absl::ToDoubleMilliseconds(absl::Now() - asked);
  if (!matches.ok()) {
    reuse_nothing();
    loads.clear();
    return false;
  }
  for (size_t k = 0; k < asked_rows.size(); ++k) {
    PrefixStore::Match& match = (*matches)[k];
    loads[asked_rows[k]] = {static_cast<int64_t>(asked_rows[k]), match.lease_id,
                            match.matched_tokens, std::move(match.pool_pages)};
  }
  // Unless the rows read the store's pages in place, a prefix that an
  // earlier row of the batch loads too (same namespace, same tokens) is
  // copied from that row, not loaded again: a remote store sends it once.
  const bool in_place = store_.SharedPool() == &cache.pool();
  std::vector<PrefixStore::LeasedRow> fetch;
  std::vector<std::pair<int64_t, int64_t>> copies;  // (row, the row it copies)
  for (size_t k : asked_rows) {
    const PrefixStore::LeasedRow& load = loads[k];
    const std::vector<int>& prompt = prompts[load.row];
    auto same = [&](const PrefixStore::LeasedRow& other) {
      return other.tokens == load.tokens && batch.salt(other.row) == batch.salt(load.row) &&
             std::equal(prompt.begin(), prompt.begin() + load.tokens, prompts[other.row].begin());
    };
    auto donor =
        in_place || load.tokens == 0 ? fetch.end() : std::find_if(fetch.begin(), fetch.end(), same);
    if (donor == fetch.end()) {
      fetch.push_back(load);
    } else {
      copies.emplace_back(load.row, donor->row);
    }
  }
  absl::Status loaded = StoreCall(result, [&] { return store_.Load(fetch, cache.tables()); });
  TraceFirstToken("prefill_loaded");
  for (size_t i = 0; loaded.ok() && i < copies.size(); ++i) {
    const auto [row, from] = copies[i];
    absl::StatusOr<torch::Tensor> kv = cache.tables().ReadTokens(from, 0, cache.length(from));
    loaded = kv.ok() ? cache.tables().WriteTokens(row, 0, *kv) : kv.status();
    if (loaded.ok()) cache.set_length(row, cache.length(from));
  }
  if (!loaded.ok()) {
    reuse_nothing();
    return false;
  }
  for (size_t k : asked_rows) result.reused_tokens[k] = loads[k].tokens;
  return true;
}

absl::StatusOr<PrefixPrefillResult> PrefixPrefill::RunBatch(const Batch& batch, KvCache& cache,
                                                            bool keep_leases,
                                                            absl::string_view lease_holder,
                                                            const LogitsReady& on_logits) {
  const std::vector<std::vector<int>>& prompts = batch.prompts;
  const size_t n = prompts.size();
  PrefixPrefillResult result;
  result.reused_tokens.assign(n, 0);
  result.stored.assign(n, {});
  const int64_t page_size = UsablePageSize(result);
  // Asked only where what a match could save is worth its round trip.
  const int64_t reusable = page_size > 0 ? ReusableTokens(batch, page_size) : 0;
  result.store_asked = reusable > 0 && reusable >= min_match_tokens_;
  bool use_store = page_size > 0 &&
                   (!result.store_asked || ComputeBranchPoints(batch, page_size, cache, result));
  for (size_t r = 0; r < n; ++r) cache.Reset(r);
  // The loaded prefixes stay pinned until the rows are stored: the store
  // then needs only what comes after them.
  std::vector<PrefixStore::LeasedRow> loads;
  absl::Cleanup release = [&] {
    std::vector<uint64_t> leases;
    for (const auto& load : loads) leases.push_back(load.lease_id);
    store_.ReleaseAll(leases).IgnoreError();
  };
  use_store = use_store && LoadPrefixes(batch, page_size, result.store_asked, cache, result, loads);
  if (!store_.UsesBaseLeases()) std::move(release).Invoke();
  for (size_t r = 0; r < n; ++r) {
    result.computed_tokens += static_cast<int64_t>(prompts[r].size()) - cache.length(r);
  }
  result.logits = PrefillWith(step_, model_, cache, prompts, chunk_);
  TraceFirstToken("prefill_forward_queued");
  if (on_logits) on_logits(result.logits);
  if (!use_store) return result;
  std::vector<PrefixStore::RowTokens> stores;
  for (size_t r = 0; r < n; ++r) {
    const int64_t whole = static_cast<int64_t>(prompts[r].size()) / page_size * page_size;
    PrefixStore::RowTokens store{static_cast<int64_t>(r),
                                 absl::MakeConstSpan(prompts[r].data(), whole)};
    store.cache_salt = batch.salt(r);
    // A row loaded without a lease (LoadUnleasedRows) leaves the store to match
    // it (base_matched false).
    if (store_.UsesBaseLeases() &&
        !(loads[r].lease_id == PrefixStore::kNoLease && loads[r].tokens > 0)) {
      store.base_lease_id = loads[r].lease_id;
      store.base_tokens = loads[r].tokens;
      store.base_matched = true;
    }
    stores.push_back(store);
  }
  auto stored = StoreCall(
      result, [&] { return store_.Store(stores, cache.tables(), keep_leases, lease_holder); });
  if (stored.ok()) result.stored = *std::move(stored);
  for (const PrefixStore::Stored& row : result.stored) {  // a row the store refused says why
    if (!row.not_stored.ok() && result.store_status.ok()) result.store_status = row.not_stored;
  }
  return result;
}

absl::StatusOr<PrefixPrefillResult> PrefixPrefill::Run(const std::vector<std::vector<int>>& prompts,
                                                       KvCache& cache, bool keep_leases,
                                                       absl::Span<const std::string> cache_salts,
                                                       absl::string_view lease_holder,
                                                       const LogitsReady& on_logits) {
  if (prompts.empty()) return absl::InvalidArgumentError("PrefixPrefill: empty batch");
  if (static_cast<int64_t>(prompts.size()) > cache.batch()) {
    return absl::InvalidArgumentError(
        absl::StrCat("PrefixPrefill: ", prompts.size(), " prompts for ", cache.batch(), " rows"));
  }
  for (const auto& p : prompts) {
    if (p.empty()) return absl::InvalidArgumentError("PrefixPrefill: empty prompt");
  }
  if (!cache_salts.empty() && cache_salts.size() != prompts.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PrefixPrefill: ", cache_salts.size(), " cache salts for ", prompts.size(), " prompts"));
  }
  const Batch batch{prompts, cache_salts};
  return TorchResult("prefix prefill",
                     [&] { return RunBatch(batch, cache, keep_leases, lease_holder, on_logits); });
}

namespace {

// The rows of a prefill: over `shared` (a store's pool, or null: a pool
// of their own sized for them).
absl::StatusOr<std::unique_ptr<KvCache>> PrefillCache(const Gpt2Model& model, PrefixCache* shared,
                                                      int64_t rows, int64_t capacity) {
  return shared != nullptr ? KvCache::Create(shared, rows, capacity)
                           : KvCache::Create(model.config(), rows, capacity, model.options().dtype,
                                             model.options().device);
}

// Prompt r's first token from its last logits (1, V), drawn with a sampler
// of sampling[r].
absl::StatusOr<std::vector<int>> SampleFirstTokens(const std::vector<torch::Tensor>& logits,
                                                   absl::Span<const SamplingOptions> sampling) {
  return TorchResult("sampling the first tokens", [&]() -> absl::StatusOr<std::vector<int>> {
    // All rows in one sampling pass and one copy to the host.
    std::vector<std::unique_ptr<Sampler>> samplers;
    std::vector<Sampler*> rows;
    for (size_t r = 0; r < logits.size(); ++r) {
      samplers.push_back(std::make_unique<Sampler>(sampling[r]));
      rows.push_back(samplers.back().get());
    }
    std::vector<int> tokens;
    for (absl::StatusOr<int64_t>& token : SampleRows(torch::cat(logits), rows)) {
      // Non-finite logits of a prompt are the device's trouble, not the
      // request's: INTERNAL, as a LibTorch error.
      if (!token.ok()) {
        return absl::InternalError(
            absl::StrCat("sampling the first tokens: ", token.status().message()));
      }
      tokens.push_back(static_cast<int>(*token));
    }
    return tokens;
  });
}

}  // namespace

absl::StatusOr<SampledPrefill> PrefillAndSample(const Gpt2Model& model, PrefixStore* store,
                                                const std::vector<std::vector<int>>& prompts,
                                                absl::Span<const SamplingOptions> sampling,
                                                const PrefillAndSampleOptions& options) {
  const int64_t chunk = options.chunk;
  KeptPrefillRows* kept = options.kept;
  const int64_t n = static_cast<int64_t>(prompts.size());
  if (static_cast<int64_t>(sampling.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("PrefillAndSample: ", sampling.size(),
                                                   " sampling options for ", n, " prompts"));
  }
  PrefixCache* shared = store != nullptr ? store->SharedPool() : nullptr;
  // The kept rows where the batch fits them, else rows of its own.
  DecodeStep* step = nullptr;
  KvCache* rows = nullptr;
  std::unique_ptr<KvCache> own;
  if (kept != nullptr && shared == nullptr && kept->Fits(prompts)) {
    step = &kept->step();
    rows = &kept->cache();  // empty: each batch empties them when it ends
  } else {
    int64_t longest = 0;
    for (const auto& p : prompts) longest = std::max<int64_t>(longest, p.size());
    absl::StatusOr<std::unique_ptr<KvCache>> made = PrefillCache(model, shared, n, longest);
    if (!made.ok()) return made.status();
    own = *std::move(made);
    rows = own.get();
  }
  // Kept rows give their pages back when the batch ends, however it ends.
  absl::Cleanup empty_kept = [&] {
    if (own == nullptr) {
      for (int64_t r = 0; r < n; ++r) rows->Reset(r);
    }
  };
  SampledPrefill out;
  // The first tokens, drawn as soon as the forward pass made the logits
  // (before the pages are stored), and handed to on_first.
  absl::Status sampled = absl::InternalError("prefill: the first tokens were not drawn");
  auto sample = [&](const std::vector<torch::Tensor>& logits) {
    absl::StatusOr<std::vector<int>> first = SampleFirstTokens(logits, sampling);
    if (!first.ok()) {
      sampled = first.status();
      return;
    }
    out.first_tokens = *std::move(first);
    sampled = absl::OkStatus();
    if (options.on_first) options.on_first(out.first_tokens);
  };
  if (store == nullptr) {
    absl::StatusOr<std::vector<torch::Tensor>> logits =
        TorchResult("prefill", [&] { return PrefillWith(step, model, *rows, prompts, chunk); });
    if (!logits.ok()) return logits.status();
    out.prefill.logits = *std::move(logits);
    out.prefill.reused_tokens.assign(n, 0);
    out.prefill.stored.assign(n, {});
    for (const auto& p : prompts) out.prefill.computed_tokens += static_cast<int64_t>(p.size());
    sample(out.prefill.logits);
  } else {
    absl::StatusOr<PrefixPrefillResult> result =
        PrefixPrefill(model, *store, chunk, step, options.min_match_tokens)
            .Run(prompts, *rows, /*keep_leases=*/true, options.cache_salts, options.lease_holder,
                 sample);
    if (!result.ok()) return result.status();
    out.prefill = *std::move(result);
  }
  if (!sampled.ok()) {
    for (const PrefixStore::Stored& s : out.prefill.stored) {
      if (store != nullptr) store->Release(s.lease_id).IgnoreError();
    }
    return sampled;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<KeptPrefillRows>> KeptPrefillRows::Create(const Gpt2Model* model,
                                                                         int64_t rows,
                                                                         int64_t pool_tokens,
                                                                         DecodeKind kind) {
  const Gpt2Config& config = model->config();
  absl::StatusOr<std::unique_ptr<KvCache>> cache =
      KvCache::Create(config, rows, config.n_positions, model->options().dtype,
                      model->options().device, kDefaultKvPageSize, pool_tokens);
  if (!cache.ok()) return cache.status();
  absl::StatusOr<std::unique_ptr<DecodeStep>> step = MakeDecodeStep(model, cache->get(), kind);
  if (!step.ok()) return step.status();
  return std::unique_ptr<KeptPrefillRows>(new KeptPrefillRows(*std::move(cache), *std::move(step)));
}

absl::Status KeptPrefillRows::Prepare() {
  return RunTorch("preparing prefill", [&] { step_->Prepare(); });
}

bool KeptPrefillRows::Fits(const std::vector<std::vector<int>>& prompts) const {
  if (static_cast<int64_t>(prompts.size()) > rows()) return false;
  const int64_t page_size = cache_->page_size();
  int64_t pages = 0;
  for (const auto& p : prompts) {
    pages += (static_cast<int64_t>(p.size()) + page_size - 1) / page_size;
  }
  // Every row is empty between batches: the pool but its scratch page.
  return pages <= cache_->pool().num_pages() - 1;
}

}  // namespace nanoserve
