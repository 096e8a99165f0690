// Prefill passes of GPT-2 as CUDA graphs: the rows of a batch, each with
// its own count of new tokens after its own cached length, run as one
// flat list of tokens (no padding between rows), captured once per
// token-count bucket and replayed. What PrefillBatch does with one eager
// LibTorch forward pass per group of rows of equal length (~200 kernels
// launched one by one from the host, each pass), in one graph launch.
//
// Per layer: cuBLAS QKV, AppendKv (every token's K/V into its row's page at
// its position), PrefillAttention (each token attends to its row's keys
// 0..position through the block table: the cached prefix and the pass's
// own earlier tokens alike, so a suffix after a prefix needs no gather;
// tiles of 32 consecutive queries of a row share each read of the keys;
// PagedAttention, a read per query, for head sizes it does not take),
// cuBLAS projection, fused residual add + LayerNorm, cuBLASLt MLP with the
// bias + GELU epilogue; then the final LayerNorm, each row's last token
// picked out and the lm_head over those rows only.
//
// Static state: one int32 input buffer on the device holding each token's
// id, position and block-table row, each row's last token, the query
// tiles, and the rows' block tables (plus a row of scratch pages that padding tokens read and
// write); the host fills it in pinned memory and copies it with one copy a
// pass. Tokens between the pass's count and its bucket are padding: token
// 0 at position 0 of the scratch row.
//
// Not thread safe: the thread that owns the cache runs the passes.
#ifndef NANOSERVE_ENGINE_CUDA_GRAPH_PREFILL_H_
#define NANOSERVE_ENGINE_CUDA_GRAPH_PREFILL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/types.h>

#include "engine/cuda/kernels.h"
#include "engine/kv_cache.h"
#include "engine/model.h"

namespace nanoserve::cuda {

class GraphPrefill {
 public:
  // Tokens of the largest pass; a batch with more runs as several passes.
  static constexpr int64_t kMaxPassTokens = 8192;
  // With fused attention, a batch whose attention has more (query, key)
  // pairs than this, over all heads and layers, runs as PrefillBatch's
  // eager passes: their scaled_dot_product_attention (FlashAttention) then
  // outweighs the launches a graph saves. Where PrefillAttention multiplies
  // in fp32 FMA (fp32, head sizes other than 64), measured on an H100 in
  // bf16 with that kernel (docs/decode.md): 32 prompts of 950 tokens (2.1e9
  // pairs) took 61 ms to their first tokens as graphs, 23 eagerly; one of
  // 900 (5.8e7) 2.9 ms as a graph, 5.5 eagerly; 64 of 128 (7.6e7) 6-7 ms,
  // 12-13 eagerly. On tensor cores (bf16, fp16 at head size 64), in one
  // call on an H100: 32 x 950 35.9 ms as graphs, 21.4 eagerly; 32 suffixes
  // of 54 after 896 cached tokens (2.3e8) 7.2 as graphs, 8.4 eagerly: the
  // line through them crosses at about 3.8e8.
  static constexpr int64_t kFusedEagerAbovePairs = int64_t{1} << 28;
  static constexpr int64_t kTensorCoreEagerAbovePairs = int64_t{3} << 27;

  // REQUIRES: GraphDecodeStep::CanRun(*model, *cache).ok(); max_pass_tokens
  // >= 16. Neither is owned; both outlive this. eager_above_pairs: batches
  // whose attention has more (query, key) pairs over all heads and layers
  // run eagerly (0: none do); by default, with the model's attention fused,
  // kTensorCoreEagerAbovePairs where PrefillAttention runs on tensor cores
  // and kFusedEagerAbovePairs where on fp32 FMA; else 0.
  static constexpr int64_t kDefaultEagerAbove = -1;
  GraphPrefill(const Gpt2Model* model, KvCache* cache, int64_t max_pass_tokens = kMaxPassTokens,
               int64_t eager_above_pairs = kDefaultEagerAbove);

  // As PrefillBatch(*model, *cache, prompts, /*chunk=*/0, row_begin): row
  // row_begin + r runs prompts[r] from its cached length on, its length
  // grows to prompts[r].size(), and its last position's logits come back,
  // (1, V) fp32 each (tensors of their own). Rows are packed into passes of
  // at most max_pass_tokens tokens in order.
  // REQUIRES: as PrefillBatch. Throws c10::Error on misuse, OutOfMemoryError
  // when the pool has no room for the rows' pages.
  std::vector<torch::Tensor> Run(const std::vector<std::vector<int>>& prompts, int64_t row_begin);

  // Captures every bucket (writes only into the scratch page).
  void Prepare();

  // The token-count buckets: 16, 24, 32, 48, ... (powers of two and the
  // halves between) up to the cache's rows x capacity or max_pass_tokens.
  const std::vector<int64_t>& buckets() const { return buckets_; }

 private:
  struct Graph {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    torch::Tensor logits;  // (RowsFor(bucket), V) fp32
  };
  // One pass: rows [first, first + count) of the call's prompts.
  struct Pass {
    int64_t first = 0, count = 0, tokens = 0;
  };

  int64_t BucketFor(int64_t tokens) const;
  // Rows a pass of `bucket` tokens can hold (and the logits it makes).
  int64_t RowsFor(int64_t bucket) const;
  // Query tiles a pass of `bucket` tokens may need (a row's last is partial).
  int64_t TilesFor(int64_t bucket) const;
  // Makes room in the pass's rows, fills the inputs and copies them to the
  // device.
  void Stage(const std::vector<std::vector<int>>& prompts, int64_t row_begin, const Pass& pass,
             int64_t bucket);
  // The pass over `bucket` tokens on the current stream: the logits.
  torch::Tensor Forward(int64_t bucket);
  // Runs the pass eagerly on the side stream, then captures it. Returns the
  // eager logits.
  torch::Tensor Capture(int64_t bucket);
  // The staged pass: its graph's replay (captured first if new).
  torch::Tensor Launch(int64_t bucket);

  const Gpt2Model* model_;
  KvCache* cache_;
  std::vector<int64_t> buckets_;
  int64_t eager_above_pairs_ = 0;
  int64_t max_rows_ = 0;  // rows of one pass: the cache's
  int64_t width_ = 0;     // pages of a block table
  // The inputs, int32: ids, positions, table rows (regions as long as the
  // largest bucket, of which a bucket reads its first), the rows' last tokens
  // (max_rows_), the query tiles (first token, count; TilesFor the largest
  // bucket), then (max_rows_ + 1) block tables, the last all scratch.
  torch::Tensor host_inputs_;  // pinned
  torch::Tensor inputs_;       // on the device
  torch::Tensor ids_, positions_, table_rows_, last_, tiles_, tables_;
  bool tiled_ = false;  // PrefillAttention takes the head size
  // Which kernel (PrefillAttentionParams::version): kAuto unless
  // $NANOSERVE_PREFILL_ATTENTION names one.
  PrefillAttentionVersion attention_version_ = PrefillAttentionVersion::kAuto;
  at::cuda::CUDAEvent inputs_copied_;  // host_inputs_ may be rewritten once it passed
  c10::cuda::CUDAStream side_;         // eager runs and captures
  at::cuda::MempoolId_t pool_;         // shared by all buckets' graphs
  std::map<int64_t, Graph> graphs_;
};

}  // namespace nanoserve::cuda

#endif  // NANOSERVE_ENGINE_CUDA_GRAPH_PREFILL_H_
