#include "engine/prefill.h"

#include <algorithm>
#include <numeric>

#include "absl/cleanup/cleanup.h"
#include "absl/types/span.h"
#include "kv_store/page_copy.h"
#include "kv_store/prefix_cache.h"

namespace nanoserve {

torch::Tensor PrefillRow(const Gpt2Model& model, KvCache& cache, int64_t row,
                         const std::vector<int>& prompt, int64_t chunk) {
  const int64_t n = static_cast<int64_t>(prompt.size());
  TORCH_CHECK(cache.length(row) < n, "PrefillRow: nothing left to prefill");
  if (chunk <= 0) chunk = n;
  torch::Tensor hidden;  // (1, T, C) of the last chunk
  for (int64_t begin = cache.length(row); begin < n; begin += chunk) {
    const int64_t len = std::min(chunk, n - begin);
    std::vector<int64_t> ids(prompt.begin() + begin, prompt.begin() + begin + len);
    hidden = model.Forward(torch::tensor(ids, torch::kLong).view({1, len}),
                           torch::arange(begin, begin + len, torch::kLong).view({1, len}),
                           {&cache, row});
  }
  return model.Logits(hidden.select(1, hidden.size(1) - 1));  // (1, V)
}

absl::Status PrefixPrefill::Run(const std::vector<std::vector<int>>& prompts, KvCache& cache,
                                std::vector<torch::Tensor>& first_logits) {
  const int64_t page_size = prefix_cache_.page_size();
  reused_.assign(prompts.size(), 0);
  // A depth-first walk of the batch's radix tree: lexicographic order puts
  // every prompt right after the prompts it shares the longest prefix with.
  std::vector<size_t> order(prompts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return prompts[a] < prompts[b]; });

  for (size_t r : order) {
    const std::vector<int>& prompt = prompts[r];
    const int64_t n = static_cast<int64_t>(prompt.size());
    // At most n - 1 tokens from the cache: the last one must run for logits.
    auto match = prefix_cache_.Match(absl::MakeConstSpan(prompt.data(), n - 1));
    absl::Cleanup release_match = [&] {
      if (match.lease_id != PrefixCache::kNoLease) prefix_cache_.Release(match.lease_id).IgnoreError();
    };
    const int64_t reused = match.matched_tokens;
    cache.set_length(r, 0);
    if (reused > 0) {
      auto kv = GatherPages(prefix_cache_.storage(), match.pages);  // (L, 2, H, P, D)
      if (!kv.ok()) return kv.status();
      cache.LoadRow(r, *kv);
    }
    reused_[r] = reused;
    first_logits[r] = PrefillRow(model_, cache, r, prompt, chunk_);

    // Store the new full pages for later prompts. A full pool that cannot
    // evict only costs this prompt its insertion.
    const int64_t full = (n / page_size) * page_size;
    if (full <= reused) continue;
    auto pages = prefix_cache_.AllocatePages((full - reused) / page_size);
    if (!pages.ok()) continue;
    // Until Insert adopts them, the new pages are ours to give back.
    absl::Cleanup free_pages = [&] { prefix_cache_.FreePages(*pages).IgnoreError(); };
    absl::Status written = ScatterPages(prefix_cache_.storage(), *pages, cache.ReadRow(r, reused, full));
    if (!written.ok()) return written;
    std::vector<int32_t> all_pages = match.pages;
    all_pages.insert(all_pages.end(), pages->begin(), pages->end());
    auto inserted = prefix_cache_.Insert(absl::MakeConstSpan(prompt.data(), full), all_pages);
    if (!inserted.ok()) return inserted.status();
    std::move(free_pages).Cancel();
    prefix_cache_.Release(inserted->lease_id).IgnoreError();
  }
  return absl::OkStatus();
}

}  // namespace nanoserve
