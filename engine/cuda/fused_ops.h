// LibTorch wrappers of engine/cuda/kernels.h: shapes checked, launched on
// the current CUDA stream, errors thrown as c10::Error like any LibTorch op.
// Built only with CUDA (NANOSERVE_WITH_CUDA). tests/engine/cuda_kernels_test
// compares each with its plain LibTorch expression.
#ifndef NANOSERVE_ENGINE_CUDA_FUSED_OPS_H_
#define NANOSERVE_ENGINE_CUDA_FUSED_OPS_H_

#include <cstdint>

#include <torch/torch.h>

namespace nanoserve::cuda {

// x: (N, C) updated in place to x + delta (delta undefined: unchanged);
// returns layer_norm(x, weight, bias, eps), (N, C).
torch::Tensor AddLayerNorm(torch::Tensor& x, const torch::Tensor& delta,
                           const torch::Tensor& weight, const torch::Tensor& bias, double eps);

// ids, positions: (N,) int32. Writes wte[ids] + wpe[positions] into x (N, C)
// and returns its layer_norm, (N, C).
torch::Tensor EmbedLayerNorm(const torch::Tensor& wte, const torch::Tensor& wpe,
                             const torch::Tensor& ids, const torch::Tensor& positions,
                             const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                             torch::Tensor& x);

// qkv: (N, 3C) of the new tokens; k_cache, v_cache: (rows >= N, H, capacity,
// D) of one layer; lengths: (N,) int32, each < capacity. Writes row b's new
// key and value at position lengths[b] and returns attention of each new
// query over keys 0..lengths[b], (N, C). `splits` key ranges per (row, head)
// (DecodeAttentionSplits); any value >= 1 gives the same result.
torch::Tensor DecodeAttention(const torch::Tensor& qkv, torch::Tensor& k_cache,
                              torch::Tensor& v_cache, const torch::Tensor& lengths, int64_t splits);

// logits: (N, V) fp32. Returns each row's argmax, (N,) int64 (LibTorch's
// argmax, with ties to the lower index).
torch::Tensor ArgmaxRows(const torch::Tensor& logits);

// The number of multiprocessors of the current device.
int MultiprocessorCount();

}  // namespace nanoserve::cuda

#endif  // NANOSERVE_ENGINE_CUDA_FUSED_OPS_H_
