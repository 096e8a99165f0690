// The "cuda-graph" DecodeStep (engine/decode_step.h): the decode step of
// GPT-2 as ~9 kernels a layer (fused embedding + LayerNorm, cuBLAS QKV,
// fused decode attention that also appends the new K/V, cuBLAS projection,
// fused residual add + LayerNorm, cuBLASLt MLP with the bias + GELU
// epilogue, ...), captured as one CUDA graph per batch-size bucket and
// replayed.
//
// Static state: `inputs_` int32 on the device holds each row's token and
// length (= position), then each row's block table (its page ids padded
// with the pool's scratch page); the host writes it with one copy from
// pinned memory per step, after making room for each row's new token
// (BlockTables::PrepareWrite). Each bucket's graph reads rows [0, bucket)
// of it, reads and writes K/V in the pool's pages through the tables, and
// leaves the next-token logits and argmax in tensors of its own (the graph
// pool). Rows between the caller's row count and the bucket feed token 0 at
// their current length: that writes K/V only at the position the row's
// next token overwrites anyway, or into the scratch page, so it disturbs
// nothing.
//
// The first step of a bucket runs eagerly on a side stream (warming cuBLAS
// there) and is then captured; Prepare() does this for every bucket ahead of
// time. Replays run on the caller's current stream.
#ifndef NANOSERVE_ENGINE_CUDA_GRAPH_DECODE_STEP_H_
#define NANOSERVE_ENGINE_CUDA_GRAPH_DECODE_STEP_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/types.h>

#include "absl/status/status.h"
#include "engine/cuda/fused_ops.h"
#include "engine/cuda/graph_prefill.h"
#include "engine/decode_step.h"
#include "engine/kv_cache.h"
#include "engine/model.h"

namespace nanoserve::cuda {

struct GraphDecodeStepOptions {
  // The blocks' four matrix products of buckets up to kMatvecMaxBucket rows
  // by LaunchMatvec (engine/cuda/matvec.cu: the weight streamed once,
  // split-K, bias and GELU or the residual add fused) instead of cuBLAS.
  // Off until measured on the step (scripts/gpu/kernels.sh measures the
  // kernel alone); `--decode_step cuda-graph-matvec` turns it on.
  bool fused_matvec = false;
  // With fused_matvec: each block's two LayerNorms folded into the QKV and
  // MLP products that read them (MatvecParams::ln_weight), two kernels a
  // layer fewer. Off until measured; `--decode_step cuda-graph-matvec-ln`.
  bool fused_layer_norm = false;
  // Prefill as CUDA graphs (GraphPrefill); false: PrefillBatch's eager
  // passes (`--decode_step cuda-graph-eager-prefill`, to compare).
  bool graph_prefill = true;
  // Shared-prefix (cascade) attention (fused_ops.h's SharedPrefix): each
  // step, rows whose block tables begin with the same pages (prefix reuse
  // over a shared pool: Part C's rows) are grouped, and a group's queries
  // attend those pages once, as one tensor-core tile
  // (LaunchSharedPrefixAttention), each row its own keys after them. bf16
  // and fp16 at head size 64 (else ignored). Off until measured;
  // `--decode_step cuda-graph-cascade`.
  bool shared_prefix_attention = false;
};

class GraphDecodeStep final : public DecodeStep {
 public:
  static constexpr int64_t kMatvecMaxBucket = 8;

  // OK if this step can run `model` over `cache`: both on one CUDA device in
  // fp32/bf16/fp16, head size <= 128, width <= 4096.
  static absl::Status CanRun(const Gpt2Model& model, const KvCache& cache);

  // REQUIRES: CanRun(*model, *cache).ok().
  GraphDecodeStep(const Gpt2Model* model, KvCache* cache, GraphDecodeStepOptions options = {});

  torch::Tensor Run(const std::vector<int64_t>& tokens, std::vector<int64_t>* greedy) override;
  std::vector<torch::Tensor> Prefill(const std::vector<std::vector<int>>& prompts,
                                     int64_t row_begin, int64_t chunk) override;
  void Prepare() override;
  std::string name() const override {
    if (!options_.graph_prefill) return "cuda-graph-eager-prefill";
    if (options_.shared_prefix_attention) return "cuda-graph-cascade";
    if (!options_.fused_matvec) return "cuda-graph";
    return options_.fused_layer_norm ? "cuda-graph-matvec-ln" : "cuda-graph-matvec";
  }

  int64_t shared_prefix_row_steps() const override { return shared_row_steps_; }

  // The batch-size buckets: 1, 2, 4, ... below the cache's rows, and its rows.
  const std::vector<int64_t>& buckets() const { return buckets_; }

  // Device microseconds of one replay of the graph for `rows` rows (its
  // bucket), replayed `replays` times back to back with the inputs of the
  // last Run. REQUIRES: a Run of that bucket has captured it.
  double ReplayMicros(int64_t rows, int replays);

 private:
  struct Outputs {
    torch::Tensor logits;  // (bucket, V) fp32
    torch::Tensor tokens;  // (bucket,) int64: argmax of logits
  };
  struct Graph {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    Outputs outputs;
  };

  // Fills the inputs of rows [0, bucket) from `tokens` (missing rows: token
  // 0) and the cache's lengths, and copies them to the device.
  void StageInputs(const std::vector<int64_t>& tokens, int64_t bucket);
  // With shared_prefix_attention: the groups of rows [0, n) whose block
  // tables begin with the same pages, into the staged inputs (each row's
  // key_begin, the groups' [keys, count, rows...]). After the rows' pages
  // for this step are prepared. Returns the rows grouped.
  int64_t StageGroups(int64_t n, int32_t* key_begin, int32_t* groups) const;
  // The step over rows [0, bucket) on the current stream.
  Outputs Forward(int64_t bucket);
  // Runs the step eagerly on the side stream, then captures it. Returns the
  // eager outputs.
  Outputs Capture(int64_t bucket);
  int64_t BucketFor(int64_t rows) const;

  const Gpt2Model* model_;
  KvCache* cache_;
  GraphDecodeStepOptions options_;
  MatvecScratch matvec_scratch_;  // fused_matvec only
  std::vector<int64_t> buckets_;
  std::map<int64_t, int64_t> splits_;  // bucket -> key ranges of DecodeAttention
  torch::Tensor host_inputs_;          // int32, pinned
  torch::Tensor inputs_;               // the same on the device:
  torch::Tensor steps_;                //   (2, rows): tokens, lengths
  torch::Tensor tables_;               //   (rows, max_pages): block tables
  // shared_prefix_attention only (else undefined), after the tables:
  torch::Tensor key_begin_;            //   (rows,): each row's shared keys, or 0
  torch::Tensor groups_;               //   (max groups, kSharedPrefixGroupInts)
  int64_t shared_splits_ = 1;          // key ranges of the shared keys
  int64_t shared_row_steps_ = 0;       // rows grouped, summed over the steps
  torch::Tensor host_tokens_;          // (rows,) int64, pinned
  at::cuda::CUDAEvent inputs_copied_;  // host_inputs_ may be rewritten once it passed
  c10::cuda::CUDAStream side_;         // eager runs and captures
  at::cuda::MempoolId_t pool_;         // shared by all buckets' graphs
  std::map<int64_t, Graph> graphs_;
  std::unique_ptr<GraphPrefill> prefill_;  // graph_prefill only
};

}  // namespace nanoserve::cuda

#endif  // NANOSERVE_ENGINE_CUDA_GRAPH_DECODE_STEP_H_
