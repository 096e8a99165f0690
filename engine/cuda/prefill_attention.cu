// Prefill attention over paged K/V, tiled in the manner of FlashAttention:
// one thread block per (head, query tile), a tile being up to
// kPrefillQueryTile consecutive tokens of one row. The block walks the
// row's keys 0..(its last query's position) in tiles, loading each key tile
// once from the pages into shared memory for all its queries, and keeps a
// running max and sum per query (online softmax). Three kernels
// (PrefillAttentionParams::version); the register form is in
// prefill_attention_mma.cu, the other two here:
//
// Tensor cores (bf16 and fp16, head size 64: every GPT-2): 2 warps of 16
// queries; a tile of 64 keys and values in shared memory as 16-bit; each
// warp's S = Q K^T and O += P V by nvcuda::wmma 16x16x16 products with fp32
// sums; the online softmax on S in shared memory (two lanes a query row),
// P rounded to the element type for its product (FlashAttention 2's order
// of work; its running output lives in shared memory between tiles, not in
// registers).
//
// FMA (fp32, other head sizes, and the tensor cores' reference): 4 warps
// of 8 queries, 4 lanes a query, in fp32. Lane `sub` of a query
// scores keys sub, sub + 4, ... of a tile (the query's q in registers) and
// accumulates the 16-byte column chunks sub, sub + 4, ... of its output;
// the 4 lanes share their scores by shuffles. Rows of the key tile are
// kD + 4 floats apart, so that the 4 keys lanes read at once, and the 4
// chunks, fall in distinct banks.
//
// Split over the keys (PrefillAttentionParams::splits > 1): block (head,
// tile, s) takes range s of the tile's keys (KeyRange: whole 64-key tiles)
// and, where more than one range holds keys, writes its queries' max score,
// sum of weights and unnormalised output to the workspace;
// PrefillAttentionCombineKernel merges a tile's ranges. A tile of fewer
// keys than a range is computed whole by its first block, as unsplit.
// A range may hold no key a query sees (its position is before the range):
// that query's max stays -inf and its sum 0, and the merge skips it.
#include <mma.h>

#include <algorithm>

#include "engine/cuda/common.cuh"
#include "engine/cuda/prefill_attention.cuh"

namespace nanoserve::cuda {
namespace {

using prefill::BlockTile;
using prefill::Finite;
using prefill::KeyRange;
using prefill::kPartialHead;
using prefill::kRangeKeys;
using prefill::PartialOf;

constexpr int kThreads = 128;
constexpr int kKeys = 32;  // keys per shared-memory tile
constexpr int kLanesPerQuery = 4;
// PrefillAttentionSplits' aim: blocks a multiprocessor (5 of the
// tensor-core kernel's fit one at once).
constexpr int kPrefillSplitBlocksPerSm = 4;
constexpr int kManySplitsQueries = 16;  // PrefillAttentionSplits' caps
constexpr int kFewSplits = 4;

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads) PrefillAttentionKernel(PrefillAttentionParams p) {
  static_assert(kD % 16 == 0 && kD <= kMaxHeadDim, "head sizes of whole 16-float chunks");
  static_assert(kPrefillQueryTile == kThreads / kLanesPerQuery, "a query per 4 lanes");
  constexpr int kStride = kD + 4;                   // floats from a key's row to the next
  constexpr int kChunks = kD / 4 / kLanesPerQuery;  // float4 output chunks per lane
  constexpr int kScores = kKeys / kLanesPerQuery;   // keys scored per lane per tile
  constexpr int kVec = 16 / sizeof(T);              // elements per 16-byte load
  const int h = blockIdx.x, tile = blockIdx.y, split = blockIdx.z;
  const int first = p.tiles[2 * tile], count = p.tiles[2 * tile + 1];
  if (count <= 0) return;
  const int C = p.heads * kD;
  const int lane = threadIdx.x & 31, sub = lane & (kLanesPerQuery - 1);
  const int qi = threadIdx.x / kLanesPerQuery;   // the lane's query in the tile
  const int query = first + min(qi, count - 1);  // lanes past the tile mirror its last
  const int position = p.positions[query];
  // The tile's queries see keys 0..keys-1; this block takes [begin, end).
  const KeyRange range(p.positions[first + count - 1] + 1, p.splits, split);
  const int begin = range.begin, end = range.end;
  if (begin == end) {  // past the tile's keys: an empty range, for the merge to skip
    if (range.merged && sub == 0 && qi < count) {
      float* part = PartialOf(p, query, h, split);
      part[0] = -INFINITY;
      part[1] = 0.0f;
    }
    return;
  }
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

  for (int k0 = begin; k0 < end; k0 += kKeys) {
    __syncthreads();  // the last tile has been read
    for (int c = threadIdx.x; c < kKeys * (kD / kVec); c += kThreads) {
      const int j = c / (kD / kVec), d0 = (c % (kD / kVec)) * kVec;
      const int key = k0 + j;
      float* k_row = k_s + j * kStride + d0;
      float* v_row = v_s + j * kStride + d0;
      if (key < end) {
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
    // -inf while the query has seen no key (a range after its position).
    const float m_new = fmaxf(m, tile_max);
    const float rescale = __expf(m - Finite(m_new));  // 0 on the query's first keys
    float sum = 0.0f;
#pragma unroll
    for (int jj = 0; jj < kScores; ++jj) {
      s[jj] = __expf(s[jj] - Finite(m_new));
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
  if (range.merged) {
    float* part = PartialOf(p, query, h, split);
    if (sub == 0) {
      part[0] = m;
      part[1] = l;
    }
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      *reinterpret_cast<float4*>(part + kPartialHead + 4 * (sub + c * kLanesPerQuery)) = acc[c];
    }
    return;
  }
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

// --- tensor cores ---------------------------------------------------------------

constexpr int kTcHeadDim = 64;
constexpr int kTcWarps = kPrefillQueryTile / 16;  // 16 query rows a warp
constexpr int kTcThreads = 32 * kTcWarps;
constexpr int kTcKeys = 64;                  // keys per shared-memory tile
constexpr int kHalfStride = kTcHeadDim + 8;  // 16-bit elements from a row to the next
constexpr int kFloatStride = kTcKeys + 4;    // floats from a row of S or O to the next
static_assert(kTcKeys == kTcHeadDim, "S and O rows share kFloatStride");
// Shared memory, each part 32-byte aligned (wmma's pointers): Q, K, V
// (rows of 16-bit), then per warp S and O (16 rows of fp32) and P (16 rows
// of 16-bit).
constexpr int kQBytes = kPrefillQueryTile * kHalfStride * 2;
constexpr int kKvBytes = kTcKeys * kHalfStride * 2;
constexpr int kSBytes = 16 * kFloatStride * 4;
constexpr int kPBytes = 16 * kHalfStride * 2;
constexpr int kWarpBytes = 2 * kSBytes + kPBytes;
constexpr int kTcSmem = kQBytes + 2 * kKvBytes + kTcWarps * kWarpBytes;
static_assert(kQBytes % 32 == 0 && kKvBytes % 32 == 0 && kSBytes % 32 == 0 && kPBytes % 32 == 0,
              "wmma pointers are 32-byte aligned");
static_assert(kTcSmem <= 48 * 1024, "static shared memory");

template <typename T>
__global__ void __launch_bounds__(kTcThreads) PrefillAttentionTcKernel(PrefillAttentionParams p) {
  namespace wmma = nvcuda::wmma;
  constexpr int kD = kTcHeadDim;
  __shared__ __align__(32) unsigned char smem[kTcSmem];
  T* q_s = reinterpret_cast<T*>(smem);
  T* k_s = reinterpret_cast<T*>(smem + kQBytes);
  T* v_s = reinterpret_cast<T*>(smem + kQBytes + kKvBytes);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned char* mine = smem + kQBytes + 2 * kKvBytes + warp * kWarpBytes;
  float* s_w = reinterpret_cast<float*>(mine);
  float* o_w = reinterpret_cast<float*>(mine + kSBytes);
  T* p_w = reinterpret_cast<T*>(mine + 2 * kSBytes);

  BlockTile bt;
  if (!bt.Take(p, kTcThreads)) return;
  const int h = bt.h, split = bt.split, first = bt.first, count = bt.count;
  const int begin = bt.begin, end = bt.end;
  const int32_t* table = bt.table;
  const int C = p.heads * kD;
  const T* qkv = static_cast<const T*>(p.qkv);
  const T* k_pages = static_cast<const T*>(p.k_pages);
  const T* v_pages = static_cast<const T*>(p.v_pages);

  // Q, 16 bytes a thread a step; rows past the tile are zeros (their
  // outputs are not written).
  for (int c = threadIdx.x; c < kPrefillQueryTile * kD / 8; c += kTcThreads) {
    const int r = c / (kD / 8), d = (c % (kD / 8)) * 8;
    int4 bits = make_int4(0, 0, 0, 0);
    if (r < count) {
      bits = *reinterpret_cast<const int4*>(qkv + static_cast<int64_t>(first + r) * 3 * C + h * kD +
                                            d);
    }
    *reinterpret_cast<int4*>(q_s + r * kHalfStride + d) = bits;
  }
  for (int i = lane; i < 16 * kFloatStride; i += 32) o_w[i] = 0.0f;
  // Each lane keeps half a row's softmax state: row lane / 2 of its warp's.
  const int row = lane / 2, half = lane % 2;
  const int r = warp * 16 + row;  // the row's query in the tile
  // Tokens of a tile are consecutive positions of one row; rows past the
  // tile mirror its last query.
  const int position = p.positions[first + min(r, count - 1)];
  float m = -INFINITY, l = 0.0f;

  // A key tile's K and V, 16 bytes a thread a load, all loads in flight at
  // once in registers: the next tile's are issued before this tile's
  // products, so that their latency hides behind them.
  constexpr int kLoads = kTcKeys * kD / 8 / kTcThreads;
  static_assert(kLoads * kTcThreads * 8 == kTcKeys * kD, "whole loads");
  int4 k_next[kLoads], v_next[kLoads];
  auto load_tile = [&](int k0) {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int c = threadIdx.x + i * kTcThreads;
      const int j = c / (kD / 8), d = (c % (kD / 8)) * 8;
      const int key = k0 + j;
      k_next[i] = v_next[i] = make_int4(0, 0, 0, 0);
      if (key < end) {
        const int64_t at = table[key / p.page_size] * p.page_stride +
                           (static_cast<int64_t>(h) * p.page_size + key % p.page_size) * kD + d;
        k_next[i] = *reinterpret_cast<const int4*>(k_pages + at);
        v_next[i] = *reinterpret_cast<const int4*>(v_pages + at);
      }
    }
  };
  load_tile(begin);

  for (int k0 = begin; k0 < end; k0 += kTcKeys) {
    __syncthreads();  // the last tile's K and V have been read
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int c = threadIdx.x + i * kTcThreads;
      const int j = c / (kD / 8), d = (c % (kD / 8)) * 8;
      *reinterpret_cast<int4*>(k_s + j * kHalfStride + d) = k_next[i];
      *reinterpret_cast<int4*>(v_s + j * kHalfStride + d) = v_next[i];
    }
    __syncthreads();
    if (k0 + kTcKeys < end) load_tile(k0 + kTcKeys);

      // S (16 x 64 keys) = Q_w (16 x 64) K^T.
#pragma unroll
    for (int n = 0; n < kTcKeys / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int k = 0; k < kD / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
        wmma::load_matrix_sync(a, q_s + warp * 16 * kHalfStride + k * 16, kHalfStride);
        wmma::load_matrix_sync(b, k_s + n * 16 * kHalfStride + k * 16, kHalfStride);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(s_w + n * 16, acc, kFloatStride, wmma::mem_row_major);
    }
    __syncwarp();

    // The online softmax over the lane's half row (32 keys) and its
    // partner's.
    float* s_row = s_w + row * kFloatStride + half * 32;
    float tile_max = -INFINITY;
#pragma unroll 8
    for (int j = 0; j < 32; ++j) {
      const int key = k0 + half * 32 + j;
      const float s = key <= position ? s_row[j] * p.scale : -INFINITY;
      s_row[j] = s;
      tile_max = fmaxf(tile_max, s);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    // -inf while the query has seen no key (a range after its position).
    const float m_new = fmaxf(m, tile_max);
    const float rescale = __expf(m - Finite(m_new));  // 0 on the query's first keys
    float sum = 0.0f;
    T* p_row = p_w + row * kHalfStride + half * 32;
#pragma unroll 8
    for (int j = 0; j < 32; ++j) {
      const T w = FromFloat<T>(__expf(s_row[j] - Finite(m_new)));
      p_row[j] = w;
      sum += ToFloat(w);  // the weights as the product sees them
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * rescale + sum;
    m = m_new;
    float* o_row = o_w + row * kFloatStride + half * 32;
#pragma unroll 8
    for (int j = 0; j < 32; ++j) o_row[j] *= rescale;
    __syncwarp();

    // O_w (16 x 64) += P_w (16 x 64 keys) V (64 keys x 64).
#pragma unroll
    for (int n = 0; n < kD / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, o_w + n * 16, kFloatStride, wmma::mem_row_major);
#pragma unroll
      for (int k = 0; k < kTcKeys / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(a, p_w + k * 16, kHalfStride);
        wmma::load_matrix_sync(b, v_s + k * 16 * kHalfStride + n * 16, kHalfStride);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(o_w + n * 16, acc, kFloatStride, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (r >= count) return;
  const float* o_row = o_w + row * kFloatStride + half * 32;
  if (bt.merged) {
    float* part = PartialOf(p, first + r, h, split);
    if (half == 0) {
      part[0] = m;
      part[1] = l;
    }
#pragma unroll
    for (int j = 0; j < 32; j += 4) {
      *reinterpret_cast<float4*>(part + kPartialHead + half * 32 + j) =
          *reinterpret_cast<const float4*>(o_row + j);
    }
    return;
  }
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(first + r) * C + h * kD + half * 32;
  const float inv = 1.0f / l;
#pragma unroll
  for (int j = 0; j < 32; j += Packed16<T>::kSize) {
    Packed16<T> v;
#pragma unroll
    for (int i = 0; i < Packed16<T>::kSize; ++i) v.v[i] = FromFloat<T>(o_row[j + i] * inv);
    Store16(out + j, v);
  }
}

// Block (head, tile): each of the tile's queries' outputs from its ranges'
// partial results, where they were split (KeyRange::merged): first each
// query's weight for each range, exp(m_s - M) / L (the first range holds
// key 0, which every query sees, so M is finite and L positive), then the
// outputs, their ranges' loads independent.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    PrefillAttentionCombineKernel(PrefillAttentionParams p) {
  static_assert(kThreads >= kPrefillQueryTile, "a thread per query for the weights");
  __shared__ float weight[kPrefillQueryTile][kMaxPrefillAttentionSplits];
  const int h = blockIdx.x, tile = blockIdx.y;
  const int first = p.tiles[2 * tile], count = p.tiles[2 * tile + 1];
  if (count <= 0 || !KeyRange(p.positions[first + count - 1] + 1, p.splits, 0).merged) return;
  const int D = p.head_dim, C = p.heads * D;
  if (threadIdx.x < count) {
    const int token = first + threadIdx.x;
    float m = -INFINITY;
    for (int s = 0; s < p.splits; ++s) m = fmaxf(m, PartialOf(p, token, h, s)[0]);
    float l = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      const float* part = PartialOf(p, token, h, s);
      const float w = part[1] == 0.0f ? 0.0f : __expf(part[0] - m);  // 0: no key of its
      weight[threadIdx.x][s] = w;
      l += part[1] * w;
    }
    for (int s = 0; s < p.splits; ++s) weight[threadIdx.x][s] /= l;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < count * D; i += kThreads) {
    const int r = i / D, d = i % D, token = first + r;
    float acc = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      const float w = weight[r][s];
      if (w != 0.0f) acc += PartialOf(p, token, h, s)[kPartialHead + d] * w;
    }
    static_cast<T*>(p.out)[static_cast<int64_t>(token) * C + h * D + d] = FromFloat<T>(acc);
  }
}

}  // namespace

int PrefillAttentionSplits(int tokens, int heads, int max_keys, int num_sms) {
  const int tiles = std::max(1, (tokens + kPrefillQueryTile - 1) / kPrefillQueryTile);
  const int blocks = tiles * std::max(1, heads);
  const int wanted = (kPrefillSplitBlocksPerSm * num_sms + blocks - 1) / blocks;
  // A range writes, and the merge reads, a partial result per query: for
  // tiles of more queries than kManySplitsQueries, few ranges pay (an
  // H100, 896 cached keys: 4 queries 87 -> 19 us a layer at 16 ranges; 50
  // queries 88 -> 47 at 4, 73 at 16).
  const int cap = tokens <= kManySplitsQueries ? kMaxPrefillAttentionSplits : kFewSplits;
  const int most = std::max(1, (max_keys + kRangeKeys - 1) / kRangeKeys);
  return std::max(1, std::min({wanted, most, cap}));
}

bool PrefillAttentionOnTensorCores(DType dtype, int head_dim) {
  return dtype != DType::kFloat && head_dim == kTcHeadDim;
}

bool PrefillAttentionTakes(int head_dim) {
  return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
}

cudaError_t LaunchPrefillAttention(const PrefillAttentionParams& p, cudaStream_t stream) {
  if (p.num_tiles <= 0) return cudaSuccess;
  if (p.heads <= 0 || !PrefillAttentionTakes(p.head_dim) || p.page_size <= 0 || p.max_pages <= 0 ||
      p.page_stride <= 0) {
    return cudaErrorInvalidValue;
  }
  if (p.splits < 1 || p.splits > kMaxPrefillAttentionSplits ||
      (p.splits > 1 && p.workspace == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(p.heads, p.num_tiles, p.splits);
  // The ranges' partial results merged into out (splits > 1).
  auto combine = [&]() -> cudaError_t {
    if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess || p.splits == 1) return e;
    return DispatchDType(p.dtype, [&](auto zero) {
      using T = decltype(zero);
      PrefillAttentionCombineKernel<T><<<dim3(p.heads, p.num_tiles), kThreads, 0, stream>>>(p);
      return cudaGetLastError();
    });
  };
  if (p.version != PrefillAttentionVersion::kFma &&
      PrefillAttentionOnTensorCores(p.dtype, p.head_dim)) {
    if (p.version == PrefillAttentionVersion::kRegisters) {
      if (const cudaError_t e = prefill::LaunchPrefillAttentionMma(p, stream); e != cudaSuccess) {
        return e;
      }
    } else if (p.dtype == DType::kBFloat16) {
      PrefillAttentionTcKernel<__nv_bfloat16><<<grid, kTcThreads, 0, stream>>>(p);
    } else {
      PrefillAttentionTcKernel<__half><<<grid, kTcThreads, 0, stream>>>(p);
    }
    return combine();
  }
  const cudaError_t launched = DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
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
  return launched != cudaSuccess ? launched : combine();
}

}  // namespace nanoserve::cuda
