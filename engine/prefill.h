// Prompt prefill into KV cache rows: plain (Part B) and with prefix reuse
// from a PrefixCache (Part C).
#ifndef NANOSERVE_ENGINE_PREFILL_H_
#define NANOSERVE_ENGINE_PREFILL_H_

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
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

// Prefills a batch with prefix reuse. Prompts are visited in lexicographic
// order (a depth-first walk of the batch's radix tree), so a prefix shared by
// several prompts is computed by the first of them, parents before children,
// and reused by the rest. Each prompt:
//  1. matches its longest cached, page-aligned prefix P (at most len - 1
//     tokens, so the last token always runs and yields logits),
//  2. copies those P tokens' K/V from the pool into its cache row,
//  3. runs the suffix at positions P..len-1 (rectangular causal mask),
//  4. writes its new full pages into the pool and inserts them in the tree.
// When the pool is full and nothing can be evicted, step 4 is skipped for
// that prompt (its own generation is unaffected). Leases are released
// before Run returns, whatever happens.
class PrefixPrefill {
 public:
  PrefixPrefill(const Gpt2Model& model, PrefixCache& cache, int64_t chunk)
      : model_(model), prefix_cache_(cache), chunk_(chunk) {}

  // Fills rows 0..prompts.size()-1 of `cache` and first_logits[r] (1, V).
  absl::Status Run(const std::vector<std::vector<int>>& prompts, KvCache& cache,
                   std::vector<torch::Tensor>& first_logits);

  // Per prompt, tokens taken from the prefix cache (valid after Run).
  const std::vector<int64_t>& reused_tokens() const { return reused_; }

 private:
  const Gpt2Model& model_;
  PrefixCache& prefix_cache_;
  int64_t chunk_;
  std::vector<int64_t> reused_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_PREFILL_H_
