// One decode step of a batch: every row of a KvCache feeds its newest token
// at its own position (its cached length), writes that token's K/V and gets
// the next token's logits. Two implementations behind one interface:
//  - "reference": Gpt2Model::Forward + Logits, plain LibTorch, any device.
//    The CPU build and the tests' baseline use it.
//  - "cuda-graph" (CUDA builds, model on a GPU): the same math with the fused
//    kernels of engine/cuda/ and cuBLAS, over static input buffers, captured
//    once per batch-size bucket (1, 2, 4, ... up to the cache's rows) as a
//    CUDA graph and replayed: one host-to-device copy of the inputs, one
//    graph launch, one copy of the greedy tokens back into pinned memory.
// With greedy sampling both give the same tokens (fp32; tests check it) and
// logits within rounding of each other.
//
// Not thread safe: the thread that owns the cache runs the steps.
#ifndef NANOSERVE_ENGINE_DECODE_STEP_H_
#define NANOSERVE_ENGINE_DECODE_STEP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/kv_cache.h"
#include "engine/model.h"

namespace nanoserve {

enum class DecodeKind {
  kAuto,       // cuda-graph where it can run (a CUDA build, the model on a GPU), else reference
  kReference,  // always the plain LibTorch path
  kCudaGraph,  // cuda-graph or an error
  // cuda-graph with the blocks' products of small batches in the split-K
  // matrix-vector kernel (GraphDecodeStepOptions::fused_matvec), or an
  // error. Not chosen by kAuto until measured.
  kCudaGraphMatvec,
  // cuda-graph-matvec with each block's LayerNorms folded into the products
  // that read them (GraphDecodeStepOptions::fused_layer_norm). Not chosen by
  // kAuto until measured.
  kCudaGraphMatvecLn,
  // cuda-graph with prefill as PrefillBatch's eager passes (what every
  // cuda-graph step did before prefill had graphs), for comparing them.
  kCudaGraphEagerPrefill,
  // cuda-graph with shared-prefix (cascade) attention: rows holding the same
  // leading pages attend them once as a group
  // (GraphDecodeStepOptions::shared_prefix_attention). Not chosen by kAuto
  // until measured.
  kCudaGraphCascade,
};

// "auto", "reference", "cuda-graph", "cuda-graph-matvec",
// "cuda-graph-matvec-ln", "cuda-graph-eager-prefill" or "cuda-graph-cascade".
absl::StatusOr<DecodeKind> ParseDecodeKind(absl::string_view name);
std::string DecodeKindName(DecodeKind kind);

class DecodeStep {
 public:
  virtual ~DecodeStep() = default;

  // Runs rows [0, tokens.size()) of the cache: row r feeds tokens[r] at
  // position cache.length(r), and every such row's length grows by one.
  // Returns the logits of the next token, (rows, V) fp32 on the model's
  // device, valid until the next Run; with `greedy` set, also their argmax
  // per row on the host.
  // REQUIRES: 1 <= tokens.size() <= cache.batch(); each row's length <
  // capacity; token ids in the vocabulary. Throws c10::Error otherwise or on
  // a LibTorch/CUDA failure.
  virtual torch::Tensor Run(const std::vector<int64_t>& tokens, std::vector<int64_t>* greedy) = 0;

  // Prefills rows of the cache as PrefillBatch(model, cache, prompts, chunk,
  // row_begin) does, and returns what it returns: row row_begin + r runs
  // prompts[r] from its cached length on, `chunk` tokens a pass (0: all at
  // once). The reference step runs PrefillBatch; the cuda-graph step runs
  // whole prompts (chunk 0) as one flat list of tokens in a graph per
  // token-count bucket (engine/cuda/graph_prefill.h), unless built with
  // eager prefill (DecodeKind::kCudaGraphEagerPrefill), and chunks as
  // PrefillBatch. REQUIRES and throws as PrefillBatch.
  virtual std::vector<torch::Tensor> Prefill(const std::vector<std::vector<int>>& prompts,
                                             int64_t row_begin, int64_t chunk) = 0;

  // Does now the one-time work that the first steps would otherwise pay
  // (the cuda-graph step captures every bucket, its prefill's too). Writes
  // K/V only at each row's position length(r), which the row's next token
  // overwrites, and into the pool's scratch page.
  virtual void Prepare() {}

  // The kind's name (DecodeKindName), "auto" aside.
  virtual std::string name() const = 0;

  // Row-steps so far whose shared leading pages were attended once for
  // their group (the cuda-graph-cascade step's shared-prefix attention);
  // 0 for the other steps.
  virtual int64_t shared_prefix_row_steps() const { return 0; }
};

// A step over `cache` for `model` (neither owned; both outlive the step).
// INVALID_ARGUMENT when kCudaGraph(Matvec) is asked for and cannot run here (a CPU
// build or model, a head size or width the kernels do not take).
absl::StatusOr<std::unique_ptr<DecodeStep>> MakeDecodeStep(const Gpt2Model* model, KvCache* cache,
                                                           DecodeKind kind = DecodeKind::kAuto);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_DECODE_STEP_H_
