// Element conversions and block reductions shared by the kernels.
#ifndef NANOSERVE_ENGINE_CUDA_COMMON_CUH_
#define NANOSERVE_ENGINE_CUDA_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "engine/cuda/kernels.h"

namespace nanoserve::cuda {

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);  // round to nearest even, as LibTorch does
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half(v);
}

// v rounded to T's precision, back in fp32.
template <typename T>
__device__ __forceinline__ float RoundTo(float v) {
  return ToFloat(FromFloat<T>(v));
}

// 16 bytes of elements (8 bf16/fp16, 4 fp32), moved as one 128-bit access.
// REQUIRES: the address 16-byte aligned.
template <typename T>
struct alignas(16) Packed16 {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};
template <typename T>
__device__ __forceinline__ Packed16<T> Load16(const T* p) {
  const int4 bits = *reinterpret_cast<const int4*>(p);
  Packed16<T> out;
  memcpy(&out, &bits, sizeof(bits));
  return out;
}
// Read once (weights): cached as streaming, evicted first.
template <typename T>
__device__ __forceinline__ Packed16<T> Load16Streaming(const T* p) {
  const int4 bits = __ldcs(reinterpret_cast<const int4*>(p));
  Packed16<T> out;
  memcpy(&out, &bits, sizeof(bits));
  return out;
}
template <typename T>
__device__ __forceinline__ void Store16(T* p, const Packed16<T>& v) {
  int4 bits;
  memcpy(&bits, &v, sizeof(bits));
  *reinterpret_cast<int4*>(p) = bits;
}

// GELU with the tanh approximation, as torch::gelu(x, "tanh").
__device__ __forceinline__ float GeluTanh(float v) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * v * (1.0f + tanhf(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum (or max) of one value per thread over the block; every thread gets
// the result. REQUIRES: blockDim.x a multiple of 32, at most 1024; all
// threads call it. `scratch` holds 32 floats.
template <bool kMax>
__device__ __forceinline__ float BlockReduce(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = kMax ? WarpMax(v) : WarpSum(v);
  __syncthreads();  // scratch may still be read by an earlier call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : (kMax ? -INFINITY : 0.0f);
  return kMax ? WarpMax(v) : WarpSum(v);
}

// Calls f.template operator()<T>() for the element type of `dtype`.
template <typename F>
cudaError_t DispatchDType(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat:
      return f(float{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
    case DType::kHalf:
      return f(__half{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace nanoserve::cuda

#endif  // NANOSERVE_ENGINE_CUDA_COMMON_CUH_
