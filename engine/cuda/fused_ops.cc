#include "engine/cuda/fused_ops.h"

#include <cmath>

#include <ATen/cuda/CUDAContext.h>

#include "engine/cuda/kernels.h"

namespace nanoserve::cuda {
namespace {

DType ElementType(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat:
      return DType::kFloat;
    case torch::kBFloat16:
      return DType::kBFloat16;
    case torch::kHalf:
      return DType::kHalf;
    default:
      TORCH_CHECK(false, "fused CUDA ops take fp32, bf16 or fp16, not ", t.scalar_type());
  }
}

void CheckLaunch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, ": ", cudaGetErrorString(err));
}

void CheckDense(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.is_contiguous(), name, " must be a contiguous CUDA tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " has dtype ", t.scalar_type(),
              ", expected ", like.scalar_type());
}

}  // namespace

int MultiprocessorCount() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

torch::Tensor AddLayerNorm(torch::Tensor& x, const torch::Tensor& delta,
                           const torch::Tensor& weight, const torch::Tensor& bias, double eps) {
  CheckDense(x, x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be (N, C)");
  if (delta.defined()) {
    CheckDense(delta, x, "delta");
    TORCH_CHECK(delta.sizes() == x.sizes(), "delta must match x");
  }
  CheckDense(weight, x, "weight");
  CheckDense(bias, x, "bias");
  TORCH_CHECK(weight.numel() == x.size(1) && bias.numel() == x.size(1), "weight/bias must be (C)");
  torch::Tensor out = torch::empty_like(x);
  AddLayerNormParams p;
  p.dtype = ElementType(x);
  p.x = x.data_ptr();
  p.delta = delta.defined() ? delta.data_ptr() : nullptr;
  p.weight = weight.data_ptr();
  p.bias = bias.data_ptr();
  p.out = out.data_ptr();
  p.rows = static_cast<int>(x.size(0));
  p.cols = static_cast<int>(x.size(1));
  p.eps = static_cast<float>(eps);
  CheckLaunch(LaunchAddLayerNorm(p, at::cuda::getCurrentCUDAStream()), "AddLayerNorm");
  return out;
}

torch::Tensor EmbedLayerNorm(const torch::Tensor& wte, const torch::Tensor& wpe,
                             const torch::Tensor& ids, const torch::Tensor& positions,
                             const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                             torch::Tensor& x) {
  CheckDense(wte, wte, "wte");
  CheckDense(wpe, wte, "wpe");
  CheckDense(weight, wte, "weight");
  CheckDense(bias, wte, "bias");
  CheckDense(x, wte, "x");
  TORCH_CHECK(ids.scalar_type() == torch::kInt && positions.scalar_type() == torch::kInt &&
                  ids.is_contiguous() && positions.is_contiguous(),
              "ids and positions must be contiguous int32");
  const int64_t n = ids.numel(), c = wte.size(1);
  TORCH_CHECK(positions.numel() == n && x.size(0) == n && x.size(1) == c,
              "ids, positions and x disagree");
  torch::Tensor out = torch::empty_like(x);
  EmbedLayerNormParams p;
  p.dtype = ElementType(wte);
  p.wte = wte.data_ptr();
  p.wpe = wpe.data_ptr();
  p.ids = ids.data_ptr<int32_t>();
  p.positions = positions.data_ptr<int32_t>();
  p.weight = weight.data_ptr();
  p.bias = bias.data_ptr();
  p.x = x.data_ptr();
  p.out = out.data_ptr();
  p.rows = static_cast<int>(n);
  p.cols = static_cast<int>(c);
  p.eps = static_cast<float>(eps);
  CheckLaunch(LaunchEmbedLayerNorm(p, at::cuda::getCurrentCUDAStream()), "EmbedLayerNorm");
  return out;
}

torch::Tensor DecodeAttention(const torch::Tensor& qkv, torch::Tensor& k_cache,
                              torch::Tensor& v_cache, const torch::Tensor& lengths,
                              int64_t splits) {
  CheckDense(qkv, qkv, "qkv");
  CheckDense(k_cache, qkv, "k_cache");
  CheckDense(v_cache, qkv, "v_cache");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes(),
              "k_cache and v_cache must be (rows, H, capacity, D)");
  const int64_t n = qkv.size(0), heads = k_cache.size(1), capacity = k_cache.size(2),
                head_dim = k_cache.size(3);
  TORCH_CHECK(qkv.dim() == 2 && qkv.size(1) == 3 * heads * head_dim, "qkv must be (N, 3C)");
  TORCH_CHECK(n <= k_cache.size(0), "more rows than the cache holds");
  TORCH_CHECK(
      lengths.scalar_type() == torch::kInt && lengths.is_contiguous() && lengths.numel() == n,
      "lengths must be (N,) contiguous int32");
  TORCH_CHECK(splits >= 1, "splits must be >= 1");
  torch::Tensor out = torch::empty({n, heads * head_dim}, qkv.options());
  torch::Tensor workspace =
      torch::empty({static_cast<int64_t>(DecodeAttentionWorkspaceFloats(
                       static_cast<int>(n), static_cast<int>(heads), static_cast<int>(splits),
                       static_cast<int>(head_dim)))},
                   qkv.options().dtype(torch::kFloat));
  DecodeAttentionParams p;
  p.dtype = ElementType(qkv);
  p.qkv = qkv.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.lengths = lengths.data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.workspace = workspace.data_ptr<float>();
  p.batch = static_cast<int>(n);
  p.heads = static_cast<int>(heads);
  p.head_dim = static_cast<int>(head_dim);
  p.capacity = static_cast<int>(capacity);
  p.splits = static_cast<int>(splits);
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  CheckLaunch(LaunchDecodeAttention(p, at::cuda::getCurrentCUDAStream()), "DecodeAttention");
  return out;
}

torch::Tensor ArgmaxRows(const torch::Tensor& logits) {
  TORCH_CHECK(logits.is_cuda() && logits.is_contiguous() && logits.dim() == 2 &&
                  logits.scalar_type() == torch::kFloat,
              "logits must be a contiguous (N, V) fp32 CUDA tensor");
  torch::Tensor out = torch::empty({logits.size(0)}, logits.options().dtype(torch::kLong));
  CheckLaunch(LaunchArgmaxRows(logits.data_ptr<float>(), logits.size(0), logits.size(1),
                               out.data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream()),
              "ArgmaxRows");
  return out;
}

}  // namespace nanoserve::cuda
