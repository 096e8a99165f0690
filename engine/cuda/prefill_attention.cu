// Prefill attention over paged K/V, tiled in the manner of FlashAttention:
// one thread block per (head, query tile), a tile being up to
// kPrefillQueryTile consecutive tokens of one row. The block walks the
// row's keys 0..(its last query's position) in tiles of kKeys, loading
// each key tile once from the pages into shared memory (fp32) for all its
// queries, and keeps a running max and sum per query (online softmax).
//
// Threads: 4 warps of 8 queries, 4 lanes a query. Lane `sub` of a query
// scores keys sub, sub + 4, ... of a tile (the query's q in registers) and
// accumulates the 16-byte column chunks sub, sub + 4, ... of its output;
// the 4 lanes share their scores by shuffles. Rows of the key tile are
// kD + 4 floats apart, so that the 4 keys lanes read at once, and the 4
// chunks, fall in distinct banks.
#include "engine/cuda/common.cuh"

namespace nanoserve::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kKeys = 32;  // keys per shared-memory tile
constexpr int kLanesPerQuery = 4;

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) PrefillAttentionKernel(PrefillAttentionParams p) {
  static_assert(kD % 16 == 0 && kD <= kMaxHeadDim, "head sizes of whole 16-float chunks");
  static_assert(kPrefillQueryTile == kThreads / kLanesPerQuery, "a query per 4 lanes");
  constexpr int kStride = kD + 4;                   // floats from a key's row to the next
  constexpr int kChunks = kD / 4 / kLanesPerQuery;  // float4 output chunks per lane
  constexpr int kScores = kKeys / kLanesPerQuery;   // keys scored per lane per tile
  constexpr int kVec = 16 / sizeof(T);              // elements per 16-byte load
  const int h = blockIdx.x, tile = blockIdx.y;
  const int first = p.tiles[2 * tile], count = p.tiles[2 * tile + 1];
  if (count <= 0) return;
  const int C = p.heads * kD;
  const int lane = threadIdx.x & 31, sub = lane & (kLanesPerQuery - 1);
  const int qi = threadIdx.x / kLanesPerQuery;   // the lane's query in the tile
  const int query = first + min(qi, count - 1);  // lanes past the tile mirror its last
  const int position = p.positions[query];
  const int keys = p.positions[first + count - 1] + 1;  // the tile's queries see keys 0..keys-1
  const int32_t* table = p.block_table + static_cast<int64_t>(p.table_rows[first]) * p.max_pages;
  const T* k_pages = static_cast<const T*>(p.k_pages);
  const T* v_pages = static_cast<const T*>(p.v_pages);

  float q[kD];
  const T* q_in = static_cast<const T*>(p.qkv) + static_cast<int64_t>(query) * 3 * C + h * kD;
#pragma unroll
  for (int d = 0; d < kD; d += kVec) {
    const Packed16<T> raw = Load16(q_in + d);
#pragma unroll
    for (int i = 0; i < kVec; ++i) q[d + i] = ToFloat(raw.v[i]) * p.scale;
  }

  __shared__ __align__(16) float k_s[kKeys * kStride];
  __shared__ __align__(16) float v_s[kKeys * kStride];
  float m = -INFINITY, l = 0.0f;
  float4 acc[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) acc[c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);

  for (int k0 = 0; k0 < keys; k0 += kKeys) {
    __syncthreads();  // the last tile has been read
    for (int c = threadIdx.x; c < kKeys * (kD / kVec); c += kThreads) {
      const int j = c / (kD / kVec), d0 = (c % (kD / kVec)) * kVec;
      const int key = k0 + j;
      float* k_row = k_s + j * kStride + d0;
      float* v_row = v_s + j * kStride + d0;
      if (key < keys) {
        const int64_t at = table[key / p.page_size] * p.page_stride +
                           (static_cast<int64_t>(h) * p.page_size + key % p.page_size) * kD + d0;
        const Packed16<T> kr = Load16(k_pages + at), vr = Load16(v_pages + at);
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          k_row[i] = ToFloat(kr.v[i]);
          v_row[i] = ToFloat(vr.v[i]);
        }
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) k_row[i] = v_row[i] = 0.0f;
      }
    }
    __syncthreads();

    float s[kScores];
    float tile_max = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < kScores; ++jj) {
      const int j = sub + jj * kLanesPerQuery;
      const float* k_row = k_s + j * kStride;
      float dot = 0.0f;
#pragma unroll
      for (int d = 0; d < kD; d += 4) {
        const float4 k4 = *reinterpret_cast<const float4*>(k_row + d);
        dot += q[d] * k4.x + q[d + 1] * k4.y + q[d + 2] * k4.z + q[d + 3] * k4.w;
      }
      s[jj] = k0 + j <= position ? dot : -INFINITY;  // causal: keys up to the query's own
      tile_max = fmaxf(tile_max, s[jj]);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    // Key 0 is in the first tile and every query sees it: m_new is finite.
    const float m_new = fmaxf(m, tile_max);
    const float rescale = __expf(m - m_new);  // 0 on the first tile
    float sum = 0.0f;
#pragma unroll
    for (int jj = 0; jj < kScores; ++jj) {
      s[jj] = __expf(s[jj] - m_new);
      sum += s[jj];
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    l = l * rescale + sum;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      acc[c].x *= rescale;
      acc[c].y *= rescale;
      acc[c].z *= rescale;
      acc[c].w *= rescale;
    }
    const int base = lane & ~(kLanesPerQuery - 1);
#pragma unroll
    for (int j = 0; j < kKeys; ++j) {
      // Key j's weight, from the lane that scored it.
      const float w = __shfl_sync(0xffffffffu, s[j / kLanesPerQuery], base | (j % kLanesPerQuery));
      const float* v_row = v_s + j * kStride;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const float4 v4 = *reinterpret_cast<const float4*>(v_row + 4 * (sub + c * kLanesPerQuery));
        acc[c].x += w * v4.x;
        acc[c].y += w * v4.y;
        acc[c].z += w * v4.z;
        acc[c].w += w * v4.w;
      }
    }
    m = m_new;
  }
  if (qi >= count) return;
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(query) * C + h * kD;
  const float inv = 1.0f / l;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int d = 4 * (sub + c * kLanesPerQuery);
    out[d] = FromFloat<T>(acc[c].x * inv);
    out[d + 1] = FromFloat<T>(acc[c].y * inv);
    out[d + 2] = FromFloat<T>(acc[c].z * inv);
    out[d + 3] = FromFloat<T>(acc[c].w * inv);
  }
}

}  // namespace

bool PrefillAttentionTakes(int head_dim) {
  return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
}

cudaError_t LaunchPrefillAttention(const PrefillAttentionParams& p, cudaStream_t stream) {
  if (p.num_tiles <= 0) return cudaSuccess;
  if (p.heads <= 0 || !PrefillAttentionTakes(p.head_dim) || p.page_size <= 0 || p.max_pages <= 0 ||
      p.page_stride <= 0) {
    return cudaErrorInvalidValue;
  }
  return DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    const dim3 grid(p.heads, p.num_tiles);
    switch (p.head_dim) {
      case 16:
        PrefillAttentionKernel<T, 16><<<grid, kThreads, 0, stream>>>(p);
        break;
      case 32:
        PrefillAttentionKernel<T, 32><<<grid, kThreads, 0, stream>>>(p);
        break;
      case 64:
        PrefillAttentionKernel<T, 64><<<grid, kThreads, 0, stream>>>(p);
        break;
      default:
        PrefillAttentionKernel<T, 128><<<grid, kThreads, 0, stream>>>(p);
    }
    return cudaGetLastError();
  });
}

}  // namespace nanoserve::cuda
