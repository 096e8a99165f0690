// Prompt prefill into KV cache rows: plain (Part B) and with prefix reuse
// from a PrefixCache (Part C).
#ifndef NANOSERVE_ENGINE_PREFILL_H_
#define NANOSERVE_ENGINE_PREFILL_H_

#include <cstdint>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/kv_cache.h"
#include "engine/model.h"

namespace nanoserve {

class PrefixCache;

// Runs prompt[cache.length(row):] through the model into cache row `row`,
// `chunk` tokens per pass (0 = all at once), positions continuing from the
// row's length. Returns the last position's logits, (1, V) fp32.
// REQUIRES: cache.length(row) < prompt.size().
torch::Tensor PrefillRow(const Gpt2Model& model, KvCache& cache, int64_t row,
                         const std::vector<int>& prompt, int64_t chunk);

// Prefills every row r of `cache` with what prompts[r] has beyond the row's
// current length (its cached prefix, possibly empty). Consecutive rows with
// as many tokens left run together in one forward pass per chunk (at most
// kMaxPrefillBatchTokens tokens a pass), each at its own positions.
// Returns each row's last-position logits, (1, V) fp32.
// REQUIRES: prompts.size() <= cache.batch(); cache.length(r) < prompts[r].size().
std::vector<torch::Tensor> PrefillBatch(const Gpt2Model& model, KvCache& cache,
                                        const std::vector<std::vector<int>>& prompts,
                                        int64_t chunk);
inline constexpr int64_t kMaxPrefillBatchTokens = 16384;

// Prefills a batch with prefix reuse (Part C), in two phases:
//  1. Shared prefixes, parents before children. In lexicographic order (a
//     depth-first walk of the batch's radix tree) each prompt's longest
//     prefix shared with a neighbour, page aligned and at most len - 1
//     tokens, is a branch point of the tree. Branch points are computed in
//     order of length, each once, starting from what the cache already
//     holds, and inserted into the cache.
//  2. Suffixes. Every prompt matches its longest cached prefix P (at most
//     len - 1 tokens, so the last token always runs and yields logits),
//     copies those P tokens' K/V from the pool into its row (pinning the
//     pages only while copying), and the suffixes
//     run batched (PrefillBatch) at positions P..len-1 with rectangular
//     causal masks. Each prompt's new full pages go into the pool and tree.
// So a prefix shared by several prompts of a batch is computed once. When
// the pool is full and nothing can be evicted, a prompt's pages are simply
// not inserted (its own generation is unaffected). Leases are released
// before Run returns, whatever happens.
class PrefixPrefill {
 public:
  PrefixPrefill(const Gpt2Model& model, PrefixCache& cache, int64_t chunk)
      : model_(model), prefix_cache_(cache), chunk_(chunk) {}

  // Fills rows 0..prompts.size()-1 of `cache` and returns each row's
  // last-position logits (1, V).
  absl::StatusOr<std::vector<torch::Tensor>> Run(const std::vector<std::vector<int>>& prompts,
                                                 KvCache& cache);

  // Valid after Run. Per prompt, tokens its row took from the prefix cache.
  const std::vector<int64_t>& reused_tokens() const { return reused_; }
  // Prompt tokens that ran through the model, both phases.
  int64_t computed_tokens() const { return computed_; }

 private:
  // Copies the longest cached prefix of each (row, tokens) into its row
  // (setting the row's length to it); matched[i] is its length.
  absl::Status LoadRows(KvCache& cache,
                        const std::vector<std::pair<int64_t, absl::Span<const int>>>& rows,
                        std::vector<int64_t>& matched);
  // Stores the whole pages of each (row, tokens) that the tree lacks, from
  // the row (which holds their K/V), into new pages and inserts them. A
  // pool that cannot make room is not an error: that row is not inserted.
  absl::Status StoreRows(const KvCache& cache,
                         const std::vector<std::pair<int64_t, const std::vector<int>*>>& rows);

  const Gpt2Model& model_;
  PrefixCache& prefix_cache_;
  int64_t chunk_;
  std::vector<int64_t> reused_;
  int64_t computed_ = 0;
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_PREFILL_H_
