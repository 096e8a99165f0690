#include "engine/decode_step.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/prefill.h"

#ifdef NANOSERVE_WITH_CUDA
#include "engine/cuda/graph_decode_step.h"
#endif

namespace nanoserve {
namespace {

class ReferenceDecodeStep final : public DecodeStep {
 public:
  ReferenceDecodeStep(const Gpt2Model* model, KvCache* cache) : model_(model), cache_(cache) {}

  torch::Tensor Run(const std::vector<int64_t>& tokens, std::vector<int64_t>* greedy) override {
    torch::InferenceMode guard;
    const int64_t n = static_cast<int64_t>(tokens.size());
    TORCH_CHECK(n >= 1 && n <= cache_->batch(), "decode step of ", n, " rows over a cache of ",
                cache_->batch());
    std::vector<int64_t> positions(cache_->lengths().begin(), cache_->lengths().begin() + n);
    // Host tensors: Forward copies them onto the device without waiting.
    torch::Tensor hidden = model_->Forward(torch::tensor(tokens, torch::kLong).view({n, 1}),
                                           torch::tensor(positions, torch::kLong).view({n, 1}),
                                           {cache_, 0});         // (n, 1, C)
    torch::Tensor logits = model_->Logits(hidden.select(1, 0));  // (n, V)
    if (greedy != nullptr) {
      torch::Tensor best = logits.argmax(-1).cpu();
      greedy->assign(best.data_ptr<int64_t>(), best.data_ptr<int64_t>() + n);
    }
    return logits;
  }

  std::vector<torch::Tensor> Prefill(const std::vector<std::vector<int>>& prompts,
                                     int64_t row_begin, int64_t chunk) override {
    return PrefillBatch(*model_, *cache_, prompts, chunk, row_begin);
  }

  std::string name() const override { return "reference"; }

 private:
  const Gpt2Model* model_;
  KvCache* cache_;
};

}  // namespace

absl::StatusOr<DecodeKind> ParseDecodeKind(absl::string_view name) {
  if (name == "auto") return DecodeKind::kAuto;
  if (name == "reference") return DecodeKind::kReference;
  if (name == "cuda-graph") return DecodeKind::kCudaGraph;
  if (name == "cuda-graph-matvec") return DecodeKind::kCudaGraphMatvec;
  if (name == "cuda-graph-matvec-ln") return DecodeKind::kCudaGraphMatvecLn;
  if (name == "cuda-graph-eager-prefill") return DecodeKind::kCudaGraphEagerPrefill;
  if (name == "cuda-graph-cascade") return DecodeKind::kCudaGraphCascade;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown decode step '", name,
                   "' (expected auto, reference, cuda-graph, cuda-graph-matvec, "
                   "cuda-graph-matvec-ln, cuda-graph-eager-prefill or cuda-graph-cascade)"));
}

std::string DecodeKindName(DecodeKind kind) {
  switch (kind) {
    case DecodeKind::kAuto:
      return "auto";
    case DecodeKind::kReference:
      return "reference";
    case DecodeKind::kCudaGraph:
      return "cuda-graph";
    case DecodeKind::kCudaGraphMatvec:
      return "cuda-graph-matvec";
    case DecodeKind::kCudaGraphMatvecLn:
      return "cuda-graph-matvec-ln";
    case DecodeKind::kCudaGraphEagerPrefill:
      return "cuda-graph-eager-prefill";
    case DecodeKind::kCudaGraphCascade:
      return "cuda-graph-cascade";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<DecodeStep>> MakeDecodeStep(const Gpt2Model* model, KvCache* cache,
                                                           DecodeKind kind) {
  if (kind != DecodeKind::kReference) {
#ifdef NANOSERVE_WITH_CUDA
    const absl::Status usable = cuda::GraphDecodeStep::CanRun(*model, *cache);
    if (usable.ok()) {
      cuda::GraphDecodeStepOptions options;
      options.fused_matvec =
          kind == DecodeKind::kCudaGraphMatvec || kind == DecodeKind::kCudaGraphMatvecLn;
      options.fused_layer_norm = kind == DecodeKind::kCudaGraphMatvecLn;
      options.graph_prefill = kind != DecodeKind::kCudaGraphEagerPrefill;
      options.shared_prefix_attention = kind == DecodeKind::kCudaGraphCascade;
      return std::unique_ptr<DecodeStep>(new cuda::GraphDecodeStep(model, cache, options));
    }
    if (kind != DecodeKind::kAuto) return usable;
#else
    if (kind != DecodeKind::kAuto) {
      return absl::InvalidArgumentError(
          "the cuda-graph decode step needs a CUDA build of nanoserve (this one is CPU only)");
    }
#endif
  }
  return std::unique_ptr<DecodeStep>(new ReferenceDecodeStep(model, cache));
}

}  // namespace nanoserve
