#include "engine/prefill.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/types/span.h"
#include "engine/page_transfer.h"
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

absl::Status PrefixPrefill::StoreRows(
    const KvCache& cache, const std::vector<std::pair<int64_t, const std::vector<int>*>>& rows) {
  const int64_t page_size = prefix_cache_.page_size();
  struct Pending {
    int64_t row;
    absl::Span<const int> tokens;   // whole pages only
    PrefixCache::MatchResult held;  // what the tree holds now, pinned
    std::vector<int32_t> pages;     // caller-held until inserted
  };
  std::vector<Pending> pending;
  auto release = [&] {
    for (Pending& p : pending) {
      prefix_cache_.Release(p.held.lease_id).IgnoreError();
      if (!p.pages.empty()) prefix_cache_.FreePages(p.pages).IgnoreError();
    }
    pending.clear();
  };
  absl::Cleanup release_on_exit = release;
  // Writes the pending rows' pages in one scatter and inserts them; their
  // pages become evictable again.
  auto flush = [&]() -> absl::Status {
    std::vector<PageRun> runs;
    for (const Pending& p : pending) {
      if (!p.pages.empty()) runs.push_back({p.row, p.held.matched_tokens, p.pages});
    }
    if (!runs.empty()) StoreRuns(cache, runs, prefix_cache_.storage());
    for (Pending& p : pending) {
      if (p.pages.empty()) continue;
      std::vector<int32_t> all_pages = p.held.pages;
      all_pages.insert(all_pages.end(), p.pages.begin(), p.pages.end());
      auto inserted = prefix_cache_.Insert(p.tokens, all_pages);
      if (!inserted.ok()) return inserted.status();
      p.pages.clear();  // adopted (or freed as duplicates) by the tree
      prefix_cache_.Release(inserted->lease_id).IgnoreError();
    }
    release();
    return absl::OkStatus();
  };
  for (const auto& [row, tokens] : rows) {
    const int64_t full = (static_cast<int64_t>(tokens->size()) / page_size) * page_size;
    for (int attempt = 0; attempt < 2; ++attempt) {
      Pending p{row, absl::MakeConstSpan(tokens->data(), full), {}, {}};
      p.held = prefix_cache_.Match(p.tokens);
      const int64_t missing = (full - p.held.matched_tokens) / page_size;
      auto pages = prefix_cache_.AllocatePages(std::max<int64_t>(missing, 0));
      if (pages.ok()) {
        p.pages = *std::move(pages);
        pending.push_back(std::move(p));
        break;
      }
      prefix_cache_.Release(p.held.lease_id).IgnoreError();
      // No room while earlier rows hold theirs: store those, then try once
      // more. Still no room: this row is simply not inserted.
      if (pending.empty()) break;
      if (absl::Status s = flush(); !s.ok()) return s;
    }
  }
  return flush();
}

absl::Status PrefixPrefill::LoadRows(KvCache& cache,
                                     const std::vector<std::pair<int64_t, absl::Span<const int>>>& rows,
                                     std::vector<int64_t>& matched) {
  std::vector<PrefixCache::MatchResult> matches;
  absl::Cleanup release = [&] {
    for (const auto& m : matches) prefix_cache_.Release(m.lease_id).IgnoreError();
  };
  std::vector<PageRun> runs;
  matched.clear();
  for (const auto& [row, tokens] : rows) {
    matches.push_back(prefix_cache_.Match(tokens));
    matched.push_back(matches.back().matched_tokens);
    runs.push_back({row, 0, matches.back().pages});
  }
  // The leases pin the pages only while copying: the rows then hold their own K/V.
  LoadRuns(prefix_cache_.storage(), runs, cache);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<torch::Tensor>> PrefixPrefill::Run(
    const std::vector<std::vector<int>>& prompts, KvCache& cache) {
  const int64_t page_size = prefix_cache_.page_size();
  const size_t n = prompts.size();
  reused_.assign(n, 0);
  computed_ = 0;

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
  std::vector<int64_t> matched;
  for (size_t i = 0; i < branch_points.size(); ++i) {
    const auto [length, r] = branch_points[i];
    const std::vector<int>& prompt = prompts[r];
    // Neighbours in the walk with the same branch point: computed once.
    if (i > 0 && branch_points[i - 1].first == length &&
        std::equal(prompt.begin(), prompt.begin() + length,
                   prompts[branch_points[i - 1].second].begin())) {
      continue;
    }
    const int64_t row = static_cast<int64_t>(r);
    const std::vector<int> prefix(prompt.begin(), prompt.begin() + length);
    {
      PrefixCache::MatchResult m = prefix_cache_.Match(prefix);
      prefix_cache_.Release(m.lease_id).IgnoreError();
      if (m.matched_tokens == length) continue;  // cached already
    }
    if (absl::Status s = LoadRows(cache, {{row, prefix}}, matched); !s.ok()) return s;
    if (matched[0] == length) continue;  // inserted meanwhile by another thread
    computed_ += length - matched[0];
    PrefillRow(model_, cache, row, prefix, chunk_);
    if (absl::Status s = StoreRows(cache, {{row, &prefix}}); !s.ok()) return s;
  }

  // Phase 2: every prompt from its longest cached prefix (at most len - 1
  // tokens), suffixes batched.
  std::vector<std::pair<int64_t, absl::Span<const int>>> heads;
  std::vector<std::pair<int64_t, const std::vector<int>*>> rows;
  for (size_t r = 0; r < n; ++r) {
    heads.emplace_back(r, absl::MakeConstSpan(prompts[r].data(), prompts[r].size() - 1));
    rows.emplace_back(r, &prompts[r]);
  }
  if (absl::Status s = LoadRows(cache, heads, matched); !s.ok()) return s;
  for (size_t r = 0; r < n; ++r) {
    reused_[r] = matched[r];
    computed_ += static_cast<int64_t>(prompts[r].size()) - matched[r];
  }
  std::vector<torch::Tensor> logits = PrefillBatch(model_, cache, prompts, chunk_);
  if (absl::Status s = StoreRows(cache, rows); !s.ok()) return s;
  return logits;
}

}  // namespace nanoserve
