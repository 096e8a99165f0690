// Matrix-vector products for the decode step's small batches (kernels.h,
// LaunchMatvec): the weight streamed once with 16-byte loads, split-K across
// thread blocks at batch 1, the bias and GELU or residual add in the
// epilogue. engine/cuda/workbench/matvec.cu checks and times it against
// other versions and cuBLASLt.
#include <algorithm>
#include <cstdint>

#include "engine/cuda/common.cuh"

namespace nanoserve::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// k rows a warp loads before it multiplies: kGroup independent 16-byte
// loads in flight per lane.
constexpr int kGroup = 8;

int VecWidth(DType dtype) { return dtype == DType::kFloat ? 4 : 8; }
int CeilDiv(int a, int b) { return (a + b - 1) / b; }

// k rows per split: a multiple of kGroup.
__host__ __device__ inline int SplitSpan(int k, int splits) {
  const int span = (k + splits - 1) / splits;
  return (span + kGroup - 1) / kGroup * kGroup;
}

// The epilogue of one output element: y = the fp32 sum + bias.
template <typename T, MatvecEpilogue kEpilogue>
__device__ __forceinline__ T Epilogue(float y, const T* residual) {
  if constexpr (kEpilogue == MatvecEpilogue::kGelu) y = GeluTanh(y);
  if constexpr (kEpilogue == MatvecEpilogue::kResidual) y = ToFloat(*residual) + RoundTo<T>(y);
  return FromFloat<T>(y);
}

// Writes out[row, col .. col + kVec) from the fp32 sums `acc`.
template <typename T, MatvecEpilogue kEpilogue>
__device__ __forceinline__ void WriteOutputs(const MatvecParams& p, int row, int col,
                                             const float* acc) {
  constexpr int kVec = Packed16<T>::kSize;
  const int64_t offset = static_cast<int64_t>(row) * p.n + col;
  Packed16<T> bias, residual, out;
  if (p.bias != nullptr) bias = Load16(static_cast<const T*>(p.bias) + col);
  if constexpr (kEpilogue == MatvecEpilogue::kResidual) {
    residual = Load16(static_cast<const T*>(p.residual) + offset);
  }
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const float y = acc[i] + (p.bias != nullptr ? ToFloat(bias.v[i]) : 0.0f);
    out.v[i] = Epilogue<T, kEpilogue>(y, &residual.v[i]);
  }
  Store16(static_cast<T*>(p.out) + offset, out);
}

// Mean and 1 / sqrt(variance + eps) of each of the block's `rows` rows of x
// (row stride k), over all k columns, as AddLayerNorm computes them: the
// mean first, then the mean of squared deviations, in fp32. All threads
// call it; every thread gets every row's pair.
template <typename T, int kRows>
__device__ __forceinline__ void RowStats(const T* x, int rows, int k, float eps, float* mean,
                                         float* rstd) {
  __shared__ float sums[kWarps][kRows];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int pass = 0; pass < 2; ++pass) {
    float s[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      s[r] = 0.0f;
      if (r >= rows) continue;
      for (int c = threadIdx.x; c < k; c += kThreads) {
        const float v = ToFloat(x[static_cast<int64_t>(r) * k + c]);
        s[r] += pass == 0 ? v : (v - mean[r]) * (v - mean[r]);
      }
      s[r] = WarpSum(s[r]);
    }
    __syncthreads();  // the previous pass has read `sums`
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) sums[warp][r] = s[r];
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float total = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total += sums[w][r];
      if (pass == 0) {
        mean[r] = total / k;
      } else {
        rstd[r] = rsqrtf(total / k + eps);
      }
    }
  }
}

// Grid: (column tiles of 32 * kVec, splits, row tiles of kRows). Block: 4
// warps over the block's k range, each lane kVec columns of kRows rows.
template <typename T, int kRows, MatvecEpilogue kEpilogue, bool kLn>
__global__ void __launch_bounds__(kThreads) MatvecKernel(MatvecParams p) {
  constexpr int kVec = Packed16<T>::kSize;
  // Warps 1..3's sums for warp 0 to add; the last block's split sums too.
  __shared__ float4 partial[kWarps - 1][kRows][32 * kVec / 4];
  __shared__ bool last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int col = (blockIdx.x * 32 + lane) * kVec;
  const bool col_ok = col < p.n;
  const int row0 = blockIdx.z * kRows;
  const int rows = min(kRows, p.rows - row0);
  const int span = SplitSpan(p.k, gridDim.y);
  const int k_begin = blockIdx.y * span, k_end = min(p.k, k_begin + span);
  const T* weight = static_cast<const T*>(p.weight);
  const T* x = static_cast<const T*>(p.x) + static_cast<int64_t>(row0) * p.k;
  float mean[kRows], rstd[kRows];
  if constexpr (kLn) RowStats<T, kRows>(x, rows, p.k, p.ln_eps, mean, rstd);

  float acc[kRows][kVec];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[r][i] = 0.0f;
  }
  for (int k0 = k_begin + warp * kGroup; k0 < k_end; k0 += kWarps * kGroup) {
    Packed16<T> w[kGroup];
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      if (col_ok) w[j] = Load16Streaming(weight + static_cast<int64_t>(k0 + j) * p.n + col);
    }
    // x[r, k0 .. k0 + 8): the same address across the warp (a broadcast).
    Packed16<T> xs[kRows][kGroup / Packed16<T>::kSize];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int h = 0; h < kGroup / kVec; ++h) {
        if (r < rows) xs[r][h] = Load16(x + static_cast<int64_t>(r) * p.k + k0 + h * kVec);
      }
    }
    // LayerNorm's weight and bias at k0 .. k0 + 8, when it is folded in.
    Packed16<T> lw[kGroup / Packed16<T>::kSize], lb[kGroup / Packed16<T>::kSize];
    if constexpr (kLn) {
#pragma unroll
      for (int h = 0; h < kGroup / kVec; ++h) {
        lw[h] = Load16(static_cast<const T*>(p.ln_weight) + k0 + h * kVec);
        lb[h] = Load16(static_cast<const T*>(p.ln_bias) + k0 + h * kVec);
      }
    }
    if (!col_ok) continue;
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      float wf[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) wf[i] = ToFloat(w[j].v[i]);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float xv = r < rows ? ToFloat(xs[r][j / kVec].v[j % kVec]) : 0.0f;
        if constexpr (kLn) {
          if (r < rows) {
            xv = RoundTo<T>((xv - mean[r]) * rstd[r] * ToFloat(lw[j / kVec].v[j % kVec]) +
                            ToFloat(lb[j / kVec].v[j % kVec]));
          }
        }
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[r][i] = fmaf(xv, wf[i], acc[r][i]);
      }
    }
  }

  // The block's sum over its warps, in warp 0.
  if (warp > 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int i = 0; i < kVec; i += 4) {
        partial[warp - 1][r][(lane * kVec + i) / 4] =
            make_float4(acc[r][i], acc[r][i + 1], acc[r][i + 2], acc[r][i + 3]);
      }
    }
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int w = 0; w < kWarps - 1; ++w) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int i = 0; i < kVec; i += 4) {
          const float4 s = partial[w][r][(lane * kVec + i) / 4];
          acc[r][i] += s.x;
          acc[r][i + 1] += s.y;
          acc[r][i + 2] += s.z;
          acc[r][i + 3] += s.w;
        }
      }
    }
  }
  if (gridDim.y == 1) {
    if (warp == 0 && col_ok) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < rows) WriteOutputs<T, kEpilogue>(p, row0 + r, col, acc[r]);
      }
    }
    return;
  }

  // Split-K: this block's sums to the workspace, (splits, rows, n) fp32.
  if (warp == 0 && col_ok) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) continue;
      float* ws = p.workspace + (static_cast<int64_t>(blockIdx.y) * p.rows + row0 + r) * p.n + col;
#pragma unroll
      for (int i = 0; i < kVec; i += 4) {
        __stcg(reinterpret_cast<float4*>(ws + i),
               make_float4(acc[r][i], acc[r][i + 1], acc[r][i + 2], acc[r][i + 3]));
      }
    }
  }
  __threadfence();
  __syncthreads();
  unsigned* counter = p.counters + blockIdx.z * gridDim.x + blockIdx.x;
  if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == gridDim.y - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The last block: warp w adds splits w, w + 4, ... in order, warp 0 adds
  // the four in order: the same sum whichever block came last.
  float sum[kRows][kVec];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) sum[r][i] = 0.0f;
  }
  if (col_ok) {
    for (int s = warp; s < gridDim.y; s += kWarps) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= rows) continue;
        const float* ws = p.workspace + (static_cast<int64_t>(s) * p.rows + row0 + r) * p.n + col;
#pragma unroll
        for (int i = 0; i < kVec; i += 4) {
          const float4 v = __ldcg(reinterpret_cast<const float4*>(ws + i));
          sum[r][i] += v.x;
          sum[r][i + 1] += v.y;
          sum[r][i + 2] += v.z;
          sum[r][i + 3] += v.w;
        }
      }
    }
  }
  __syncthreads();  // warp 0 has read `partial` above
  if (warp > 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int i = 0; i < kVec; i += 4) {
        partial[warp - 1][r][(lane * kVec + i) / 4] =
            make_float4(sum[r][i], sum[r][i + 1], sum[r][i + 2], sum[r][i + 3]);
      }
    }
  }
  __syncthreads();
  if (warp != 0) return;
  if (lane == 0) *counter = 0;  // ready for the next launch
  if (!col_ok) return;
#pragma unroll
  for (int w = 0; w < kWarps - 1; ++w) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int i = 0; i < kVec; i += 4) {
        const float4 s = partial[w][r][(lane * kVec + i) / 4];
        sum[r][i] += s.x;
        sum[r][i + 1] += s.y;
        sum[r][i + 2] += s.z;
        sum[r][i + 3] += s.w;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r < rows) WriteOutputs<T, kEpilogue>(p, row0 + r, col, sum[r]);
  }
}

// The smallest row tile of 1, 2, 4, 8 that holds `rows` (8 above that).
int RowTile(int rows) {
  int tile = 1;
  while (tile < rows && tile < kMatvecRowTile) tile *= 2;
  return tile;
}

template <typename T, MatvecEpilogue kEpilogue, bool kLn>
cudaError_t LaunchTyped(const MatvecParams& p, dim3 grid, cudaStream_t stream) {
  switch (RowTile(p.rows)) {
    case 1:
      MatvecKernel<T, 1, kEpilogue, kLn><<<grid, kThreads, 0, stream>>>(p);
      break;
    case 2:
      MatvecKernel<T, 2, kEpilogue, kLn><<<grid, kThreads, 0, stream>>>(p);
      break;
    case 4:
      MatvecKernel<T, 4, kEpilogue, kLn><<<grid, kThreads, 0, stream>>>(p);
      break;
    default:
      MatvecKernel<T, 8, kEpilogue, kLn><<<grid, kThreads, 0, stream>>>(p);
      break;
  }
  return cudaGetLastError();
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

int MatvecSplits(DType dtype, int rows, int k, int n, int num_sms) {
  const int tiles = CeilDiv(n, 32 * VecWidth(dtype)) * CeilDiv(rows, RowTile(rows));
  const int element = dtype == DType::kFloat ? 4 : 2;
  const int by_depth = std::max(1, k / (kWarps * kGroup));  // each range >= 32 deep
  // Partial sums (splits * rows * n * 4 bytes) at most a quarter of the
  // weight (k * n * element bytes).
  const int by_bytes = std::max(1, k * element / (16 * rows));
  const int wanted = CeilDiv(4 * num_sms, tiles);
  const int splits = std::max(1, std::min({wanted, by_depth, by_bytes}));
  return CeilDiv(k, SplitSpan(k, splits));  // no empty range
}

size_t MatvecWorkspaceFloats(int rows, int n, int splits) {
  return splits > 1 ? static_cast<size_t>(splits) * rows * n : 0;
}

int MatvecCounters(DType dtype, int rows, int n) {
  return CeilDiv(n, 32 * VecWidth(dtype)) * CeilDiv(rows, RowTile(rows));
}

cudaError_t LaunchMatvec(const MatvecParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  const int vec = VecWidth(p.dtype);
  if (p.k <= 0 || p.k % kGroup != 0 || p.n <= 0 || p.n % vec != 0 || p.splits < 1) {
    return cudaErrorInvalidValue;
  }
  if (!Aligned16(p.x) || !Aligned16(p.weight) || !Aligned16(p.bias) || !Aligned16(p.residual) ||
      !Aligned16(p.out) || (p.epilogue == MatvecEpilogue::kResidual && p.residual == nullptr)) {
    return cudaErrorInvalidValue;
  }
  // A LayerNorm in front of a residual add is no product of the step's.
  if ((p.ln_weight == nullptr) != (p.ln_bias == nullptr) || !Aligned16(p.ln_weight) ||
      !Aligned16(p.ln_bias) ||
      (p.ln_weight != nullptr && p.epilogue == MatvecEpilogue::kResidual)) {
    return cudaErrorInvalidValue;
  }
  const int splits = CeilDiv(p.k, SplitSpan(p.k, p.splits));
  if (splits > 1 && (p.workspace == nullptr || p.counters == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const int tile = RowTile(p.rows);
  const dim3 grid(CeilDiv(p.n, 32 * vec), splits, CeilDiv(p.rows, tile));
  return DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    const bool ln = p.ln_weight != nullptr;
    switch (p.epilogue) {
      case MatvecEpilogue::kGelu:
        return ln ? LaunchTyped<T, MatvecEpilogue::kGelu, true>(p, grid, stream)
                  : LaunchTyped<T, MatvecEpilogue::kGelu, false>(p, grid, stream);
      case MatvecEpilogue::kResidual:
        return LaunchTyped<T, MatvecEpilogue::kResidual, false>(p, grid, stream);
      case MatvecEpilogue::kNone:
        break;
    }
    return ln ? LaunchTyped<T, MatvecEpilogue::kNone, true>(p, grid, stream)
              : LaunchTyped<T, MatvecEpilogue::kNone, false>(p, grid, stream);
  });
}

}  // namespace nanoserve::cuda
