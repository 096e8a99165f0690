// Residual add + LayerNorm, and embedding + LayerNorm: one block per row.
#include "engine/cuda/common.cuh"

namespace nanoserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = kMaxLayerNormCols / kThreads;

// a[c] + b[c] (b may be null), rounded to T, into x_row and LayerNorm of it
// into out_row. a_row may alias x_row.
template <typename T>
__device__ void RowAddLayerNorm(const T* a_row, const T* b_row, T* x_row, const T* weight,
                                const T* bias, T* out_row, int cols, float eps) {
  __shared__ float scratch[32];
  float vals[kPerThread];
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int c = threadIdx.x + i * kThreads;
    vals[i] = 0.0f;
    if (c < cols) {
      float v = ToFloat(a_row[c]);
      if (b_row != nullptr) v += ToFloat(b_row[c]);
      const T stored = FromFloat<T>(v);
      x_row[c] = stored;
      vals[i] = ToFloat(stored);
      sum += vals[i];
    }
  }
  const float mean = BlockReduce<false>(sum, scratch) / cols;
  float sq = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int c = threadIdx.x + i * kThreads;
    if (c < cols) sq += (vals[i] - mean) * (vals[i] - mean);
  }
  const float rstd = rsqrtf(BlockReduce<false>(sq, scratch) / cols + eps);
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int c = threadIdx.x + i * kThreads;
    if (c < cols) {
      out_row[c] = FromFloat<T>((vals[i] - mean) * rstd * ToFloat(weight[c]) + ToFloat(bias[c]));
    }
  }
}

template <typename T>
__global__ void AddLayerNormKernel(AddLayerNormParams p) {
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * p.cols;
  T* x = static_cast<T*>(p.x) + offset;
  const T* delta = p.delta == nullptr ? nullptr : static_cast<const T*>(p.delta) + offset;
  RowAddLayerNorm<T>(x, delta, x, static_cast<const T*>(p.weight), static_cast<const T*>(p.bias),
                     static_cast<T*>(p.out) + offset, p.cols, p.eps);
}

template <typename T>
__global__ void EmbedLayerNormKernel(EmbedLayerNormParams p) {
  const int r = blockIdx.x;
  const int64_t offset = static_cast<int64_t>(r) * p.cols;
  const T* tok = static_cast<const T*>(p.wte) + static_cast<int64_t>(p.ids[r]) * p.cols;
  const T* pos = static_cast<const T*>(p.wpe) + static_cast<int64_t>(p.positions[r]) * p.cols;
  RowAddLayerNorm<T>(tok, pos, static_cast<T*>(p.x) + offset, static_cast<const T*>(p.weight),
                     static_cast<const T*>(p.bias), static_cast<T*>(p.out) + offset, p.cols, p.eps);
}

}  // namespace

cudaError_t LaunchAddLayerNorm(const AddLayerNormParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.cols <= 0 || p.cols > kMaxLayerNormCols) return cudaErrorInvalidValue;
  return DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    AddLayerNormKernel<T><<<p.rows, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

cudaError_t LaunchEmbedLayerNorm(const EmbedLayerNormParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.cols <= 0 || p.cols > kMaxLayerNormCols) return cudaErrorInvalidValue;
  return DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    EmbedLayerNormKernel<T><<<p.rows, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace nanoserve::cuda
