#include "engine/prefill.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/types/span.h"
#include "kv_store/page_copy.h"
#include "kv_store/prefix_cache.h"

namespace nanoserve {
namespace {

// Runs rows [row_begin, row_begin + count) whose prompts (rows_prompts[i]
// for row row_begin + i) all have `left` tokens beyond their cached lengths.
// Returns (count, V) logits.
torch::Tensor PrefillRows(const Gpt2Model& model, KvCache& cache, int64_t row_begin,
                          absl::Span<const std::vector<int>* const> rows_prompts,
                          int64_t left, int64_t chunk) {
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
                                        const std::vector<std::vector<int>>& prompts,
                                        int64_t chunk) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  auto left = [&](int64_t r) { return static_cast<int64_t>(prompts[r].size()) - cache.length(r); };
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
    torch::Tensor group = PrefillRows(model, cache, r, rows_prompts, n, chunk);
    for (int64_t i = r; i < end; ++i) logits[i] = group.narrow(0, i - r, 1);  // (1, V)
    r = end;
  }
  return logits;
}

absl::Status PrefixPrefill::StorePages(KvCache& cache, int64_t row,
                                       const std::vector<int>& tokens) {
  const int64_t page_size = prefix_cache_.page_size();
  const int64_t full = (static_cast<int64_t>(tokens.size()) / page_size) * page_size;
  // What the tree holds now (it may have changed since the row was loaded).
  PrefixCache::MatchResult held = prefix_cache_.Match(absl::MakeConstSpan(tokens.data(), full));
  absl::Cleanup release = [&] { prefix_cache_.Release(held.lease_id).IgnoreError(); };
  if (full <= held.matched_tokens) return absl::OkStatus();
  auto pages = prefix_cache_.AllocatePages((full - held.matched_tokens) / page_size);
  if (!pages.ok()) return absl::OkStatus();  // full and nothing evictable: skip
  // Until Insert adopts them, the new pages are ours to give back.
  absl::Cleanup free_pages = [&] { prefix_cache_.FreePages(*pages).IgnoreError(); };
  absl::Status written = ScatterPages(prefix_cache_.storage(), *pages,
                                      cache.ReadRow(row, held.matched_tokens, full));
  if (!written.ok()) return written;
  std::vector<int32_t> all_pages = held.pages;
  all_pages.insert(all_pages.end(), pages->begin(), pages->end());
  auto inserted = prefix_cache_.Insert(absl::MakeConstSpan(tokens.data(), full), all_pages);
  if (!inserted.ok()) return inserted.status();
  std::move(free_pages).Cancel();
  return prefix_cache_.Release(inserted->lease_id);
}

absl::StatusOr<std::vector<torch::Tensor>> PrefixPrefill::Run(
    const std::vector<std::vector<int>>& prompts, KvCache& cache) {
  const int64_t page_size = prefix_cache_.page_size();
  const size_t n = prompts.size();
  reused_.assign(n, 0);
  computed_ = 0;
  // Loads the longest cached prefix of `tokens` into `row` (its length
  // becomes the match). The lease is held only while copying: the row then
  // has its own copy of the K/V.
  auto load_prefix = [&](int64_t row, absl::Span<const int> tokens) -> absl::StatusOr<int64_t> {
    PrefixCache::MatchResult m = prefix_cache_.Match(tokens);
    absl::Cleanup release = [&] { prefix_cache_.Release(m.lease_id).IgnoreError(); };
    cache.set_length(row, 0);
    if (m.matched_tokens == 0) return 0;
    auto kv = GatherPages(prefix_cache_.storage(), m.pages);  // (L, 2, H, P, D)
    if (!kv.ok()) return kv.status();
    cache.LoadRow(row, *kv);
    return m.matched_tokens;
  };

  // Phase 1: the batch's branch points, shortest first.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return prompts[a] < prompts[b]; });
  auto common = [&](size_t a, size_t b) {
    const auto& x = prompts[a];
    const auto& y = prompts[b];
    return static_cast<int64_t>(std::mismatch(x.begin(), x.begin() + std::min(x.size(), y.size()),
                                              y.begin()).first - x.begin());
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
  for (const auto& [length, r] : branch_points) {
    const int64_t row = static_cast<int64_t>(r);
    const std::vector<int> prefix(prompts[r].begin(), prompts[r].begin() + length);
    auto cached = load_prefix(row, prefix);
    if (!cached.ok()) return cached.status();
    if (*cached == length) continue;  // computed already
    computed_ += length - *cached;
    PrefillRow(model_, cache, row, prefix, chunk_);
    if (absl::Status s = StorePages(cache, row, prefix); !s.ok()) return s;
  }

  // Phase 2: every prompt from its longest cached prefix, suffixes batched.
  for (size_t r = 0; r < n; ++r) {
    const std::vector<int>& prompt = prompts[r];
    auto cached = load_prefix(static_cast<int64_t>(r),
                              absl::MakeConstSpan(prompt.data(), prompt.size() - 1));
    if (!cached.ok()) return cached.status();
    reused_[r] = *cached;
    computed_ += static_cast<int64_t>(prompt.size()) - reused_[r];
  }
  std::vector<torch::Tensor> logits = PrefillBatch(model_, cache, prompts, chunk_);
  for (size_t r = 0; r < n; ++r) {
    if (absl::Status s = StorePages(cache, static_cast<int64_t>(r), prompts[r]); !s.ok()) {
      return s;
    }
  }
  return logits;
}

}  // namespace nanoserve
