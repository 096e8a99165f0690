// Prefill attention in FlashAttention 2's register form
// (PrefillAttentionVersion::kRegisters): the grid, the tiles, the key ranges
// and the partial results are prefill_attention.cu's tensor-core kernel's;
// what differs is where the work lives.
//
// A block is 2 warps, each of 16 of the tile's queries. A warp keeps its
// queries' Q (16 x 64) as mma.sync m16n8k16 A fragments, loaded once; per
// 64-key tile it computes S = Q K^T (16 x 64: 8 accumulator fragments of
// 8 keys), masks and scales S, takes the online softmax on the
// accumulators (a lane holds 2 elements of rows g and g + 8 per fragment,
// g = lane / 4; a row's 4 lanes share its max by shuffles), rounds P to the
// element type and uses S's accumulator fragments, two by two, as the A
// fragments of O += P V as they lie, and keeps O (16 x 64: 8 fragments of
// 8 columns) in registers across the tiles. Each lane sums its own part of
// a row's weights; the 4 parts are added once at the end.
//
// K and V go through two shared-memory stages: cp.async issues tile i + 1's
// 16-byte loads (keys past the range zero-filled) before tile i's products,
// and ldmatrix reads the B fragments (K's rows as they are: S's B is K^T in
// column order; V's with .trans). Rows of 64 elements are padded to 72 (144
// bytes), so the 8 rows an ldmatrix reads fall in distinct banks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "engine/cuda/common.cuh"
#include "engine/cuda/prefill_attention.cuh"

namespace nanoserve::cuda::prefill {
namespace {

constexpr int kD = 64;  // head size
constexpr int kWarps = kPrefillQueryTile / 16;
constexpr int kThreads = 32 * kWarps;
constexpr int kKeys = 64;        // keys a tile
constexpr int kRow = kD + 8;     // elements from a shared-memory row to the next
constexpr int kFrags = kD / 8;   // 8-wide accumulator fragments across a row of S or O
constexpr int kSteps = kD / 16;  // 16-deep k steps across Q's row, and across a tile's keys
static_assert(kKeys == kD, "S and O have as many fragments a row");
constexpr int kQElems = kPrefillQueryTile * kRow;
constexpr int kTileElems = kKeys * kRow;
static_assert(kKeys * kD / 8 % kThreads == 0, "whole loads a thread");
constexpr int kSmemBytes = (kQElems + 4 * kTileElems) * 2;  // Q, then K and V of two stages
static_assert(kSmemBytes <= 48 * 1024, "static shared memory");

__device__ __forceinline__ unsigned SharedAddress(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zeros where !valid (`from` is
// then not read, but must be a valid address).
__device__ __forceinline__ void CopyAsync16(void* to, const void* from, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(to)),
               "l"(from), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CommitCopies() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void WaitCopies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Four 8x8 matrices of 16-bit elements: lanes 8i..8i+7 give matrix i's row
// addresses; r[i] is the lane's pair of matrix i: row lane / 4, columns
// 2 (lane % 4) and + 1 (with .trans: column lane / 4, rows 2 (lane % 4), + 1).
__device__ __forceinline__ void LoadMatrices(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}
__device__ __forceinline__ void LoadMatricesTransposed(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}

// d += a (16x16, rows) b (16x8, columns), fp32 sums.
template <typename T>
__device__ __forceinline__ void Mma(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                    unsigned b1);
template <>
__device__ __forceinline__ void Mma<__nv_bfloat16>(float (&d)[4], const unsigned (&a)[4],
                                                   unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void Mma<__half>(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                            unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// (lo, hi) rounded to T and packed as a fragment register (lo in the low
// half); *sum gets the rounded values, the weights as the product sees them.
template <typename T>
__device__ __forceinline__ unsigned Pack(float lo, float hi, float* sum);
template <>
__device__ __forceinline__ unsigned Pack<__nv_bfloat16>(float lo, float hi, float* sum) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  *sum += __low2float(v) + __high2float(v);
  unsigned bits;
  memcpy(&bits, &v, sizeof(bits));
  return bits;
}
template <>
__device__ __forceinline__ unsigned Pack<__half>(float lo, float hi, float* sum) {
  const __half2 v = __floats2half2_rn(lo, hi);
  *sum += __low2float(v) + __high2float(v);
  unsigned bits;
  memcpy(&bits, &v, sizeof(bits));
  return bits;
}

// Row `row`'s partial result for head h over shared-key range s, in the
// decode attention's workspace: [m, l, acc[0..kD)].
__device__ __forceinline__ float* SharedPartialOf(const SharedPrefixAttentionParams& sp, int row,
                                                  int h, int s) {
  return sp.workspace +
         ((static_cast<int64_t>(row) * sp.heads + h) * sp.slots + sp.shared_first + s) * (kD + 2);
}

// Both passes on one body: kShared false, prefill's (PrefillAttentionParams
// p: a tile of consecutive tokens of a row, causal); true, the decode step's
// shared-prefix pass (SharedPrefixAttentionParams sp: a group's rows' new
// tokens against the keys they share, every key visible, partial results in
// the decode attention's slots).
template <typename T, bool kShared>
__global__ void __launch_bounds__(kThreads)
    MmaAttentionKernel(PrefillAttentionParams p, SharedPrefixAttentionParams sp) {
  __shared__ __align__(128) T smem[kSmemBytes / 2];
  T* const q_s = smem;
  T* const k_s = smem + kQElems;                   // stage s at k_s + s * kTileElems
  T* const v_s = smem + kQElems + 2 * kTileElems;  // likewise
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;  // a fragment's row, and column pair

  // The block's queries (`count` of them: query r is token `token(r)` of
  // qkv), its keys [begin, end) and the block table they are read through.
  int h, split, count, begin, end;
  const int32_t* table;
  const int32_t* group_rows = nullptr;  // kShared: the group's rows
  int first = 0;                        // !kShared: the tile's first token
  bool merged = false;                  // !kShared: KeyRange::merged
  if constexpr (kShared) {
    h = blockIdx.x, split = blockIdx.z;
    const int32_t* group = sp.groups + static_cast<int64_t>(blockIdx.y) * kSharedPrefixGroupInts;
    const int keys = group[0];
    count = min(group[1], kSharedPrefixGroupRows);
    group_rows = group + 2;
    if (keys <= 0 || count <= 0) return;
    const KeyRange range(keys, sp.splits, split);
    begin = range.begin, end = range.end;
    if (begin == end) {  // past the shared keys: an empty range, for the merge to skip
      for (int r = threadIdx.x; r < count; r += kThreads) {
        float* part = SharedPartialOf(sp, group_rows[r], h, split);
        part[0] = -INFINITY;
        part[1] = 0.0f;
      }
      return;
    }
    table = sp.block_table + static_cast<int64_t>(group_rows[0]) * sp.max_pages;
  } else {
    BlockTile bt;
    if (!bt.Take(p, kThreads)) return;
    h = bt.h, split = bt.split, first = bt.first, count = bt.count;
    begin = bt.begin, end = bt.end, merged = bt.merged;
    table = bt.table;
  }
  auto token = [&](int r) { return kShared ? group_rows[r] : first + r; };
  const int heads = kShared ? sp.heads : p.heads;
  const int page_size = kShared ? sp.page_size : p.page_size;
  const int64_t page_stride = kShared ? sp.page_stride : p.page_stride;
  const float scale = kShared ? sp.scale : p.scale;
  const int C = heads * kD;
  const T* qkv = static_cast<const T*>(kShared ? sp.qkv : p.qkv);
  const T* k_pages = static_cast<const T*>(kShared ? sp.k_pages : p.k_pages);
  const T* v_pages = static_cast<const T*>(kShared ? sp.v_pages : p.v_pages);

  // Q (rows past the queries zeros: their outputs are not written), in the
  // first tile's group.
  for (int c = threadIdx.x; c < kPrefillQueryTile * kD / 8; c += kThreads) {
    const int r = c / (kD / 8), d = (c % (kD / 8)) * 8;
    const bool valid = r < count;
    CopyAsync16(q_s + r * kRow + d,
                qkv + static_cast<int64_t>(token(valid ? r : 0)) * 3 * C + h * kD + d, valid);
  }
  auto load_tile = [&](int k0, int stage) {
    T* k_to = k_s + stage * kTileElems;
    T* v_to = v_s + stage * kTileElems;
#pragma unroll
    for (int i = 0; i < kKeys * kD / 8 / kThreads; ++i) {
      const int c = threadIdx.x + i * kThreads;
      const int j = c / (kD / 8), d = (c % (kD / 8)) * 8;
      const int key = k0 + j;
      const bool valid = key < end;
      const int64_t at = valid
                             ? table[key / page_size] * page_stride +
                                   (static_cast<int64_t>(h) * page_size + key % page_size) * kD + d
                             : 0;
      CopyAsync16(k_to + j * kRow + d, k_pages + at, valid);
      CopyAsync16(v_to + j * kRow + d, v_pages + at, valid);
    }
  };
  load_tile(begin, 0);
  CommitCopies();

  // A warp past the tile's queries only loads.
  const bool idle = warp * 16 >= count;
  // Rows g and g + 8 of the warp's 16: the last key each sees (prefill:
  // its position, rows past the tile mirroring its last query; the shared
  // pass: every key of the range).
  const int r_lo = warp * 16 + g, r_hi = r_lo + 8;
  const int pos_lo = kShared ? end - 1 : p.positions[first + min(r_lo, count - 1)];
  const int pos_hi = kShared ? end - 1 : p.positions[first + min(r_hi, count - 1)];
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;
  float o[kFrags][4];
#pragma unroll
  for (int f = 0; f < kFrags; ++f) o[f][0] = o[f][1] = o[f][2] = o[f][3] = 0.0f;
  unsigned q_frag[kSteps][4];

  int stage = 0;
  for (int k0 = begin; k0 < end; k0 += kKeys, stage ^= 1) {
    if (k0 + kKeys < end) load_tile(k0 + kKeys, stage ^ 1);
    CommitCopies();   // an empty group on the last tile keeps the count
    WaitCopies<1>();  // this tile's group (and Q's) has landed
    __syncthreads();
    if (!idle) {
      if (k0 == begin) {
#pragma unroll
        for (int kk = 0; kk < kSteps; ++kk) {
          LoadMatrices(q_frag[kk], q_s + (warp * 16 + lane % 8 + 8 * (lane / 8 % 2)) * kRow +
                                       kk * 16 + 8 * (lane / 16));
        }
      }
      const T* k_tile = k_s + stage * kTileElems;
      const T* v_tile = v_s + stage * kTileElems;

      // S = Q K^T: fragment f holds keys 8f..8f+7 of the tile.
      float s[kFrags][4];
#pragma unroll
      for (int f = 0; f < kFrags; ++f) s[f][0] = s[f][1] = s[f][2] = s[f][3] = 0.0f;
#pragma unroll
      for (int f2 = 0; f2 < kFrags / 2; ++f2) {
#pragma unroll
        for (int kk = 0; kk < kSteps; ++kk) {
          // Keys 16 f2 + 0..15 (lanes 16..31 the second 8), dims 16 kk + 0..15.
          unsigned b[4];
          LoadMatrices(b, k_tile + (16 * f2 + lane % 8 + 8 * (lane / 16)) * kRow + kk * 16 +
                              8 * (lane / 8 % 2));
          Mma<T>(s[2 * f2], q_frag[kk], b[0], b[1]);
          Mma<T>(s[2 * f2 + 1], q_frag[kk], b[2], b[3]);
        }
      }

      // Scale, mask (keys up to the query's own, and none past the range),
      // the tile's max.
      float max_lo = -INFINITY, max_hi = -INFINITY;
#pragma unroll
      for (int f = 0; f < kFrags; ++f) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + 8 * f + 2 * t + (e & 1);
          const bool lo = e < 2;
          const float v = key <= (lo ? pos_lo : pos_hi) ? s[f][e] * scale : -INFINITY;
          s[f][e] = v;
          if (lo) {
            max_lo = fmaxf(max_lo, v);
          } else {
            max_hi = fmaxf(max_hi, v);
          }
        }
      }
      max_lo = fmaxf(max_lo, __shfl_xor_sync(0xffffffffu, max_lo, 1));
      max_lo = fmaxf(max_lo, __shfl_xor_sync(0xffffffffu, max_lo, 2));
      max_hi = fmaxf(max_hi, __shfl_xor_sync(0xffffffffu, max_hi, 1));
      max_hi = fmaxf(max_hi, __shfl_xor_sync(0xffffffffu, max_hi, 2));
      // -inf while the query has seen no key (a range after its position).
      const float new_lo = fmaxf(m_lo, max_lo), new_hi = fmaxf(m_hi, max_hi);
      const float rescale_lo = __expf(m_lo - Finite(new_lo));  // 0 on the first keys
      const float rescale_hi = __expf(m_hi - Finite(new_hi));
      m_lo = new_lo;
      m_hi = new_hi;

      // P, rounded, as the A fragments of k steps of 16 keys: step kk is
      // S's fragments 2 kk (its registers 0 and 1) and 2 kk + 1 (2 and 3).
      unsigned p_frag[kSteps][4];
      float sum_lo = 0.0f, sum_hi = 0.0f;
      const float base_lo = Finite(new_lo), base_hi = Finite(new_hi);
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        const float(&a)[4] = s[2 * kk];
        const float(&b)[4] = s[2 * kk + 1];
        p_frag[kk][0] = Pack<T>(__expf(a[0] - base_lo), __expf(a[1] - base_lo), &sum_lo);
        p_frag[kk][1] = Pack<T>(__expf(a[2] - base_hi), __expf(a[3] - base_hi), &sum_hi);
        p_frag[kk][2] = Pack<T>(__expf(b[0] - base_lo), __expf(b[1] - base_lo), &sum_lo);
        p_frag[kk][3] = Pack<T>(__expf(b[2] - base_hi), __expf(b[3] - base_hi), &sum_hi);
      }
      l_lo = l_lo * rescale_lo + sum_lo;  // the lane's part of the row's sum
      l_hi = l_hi * rescale_hi + sum_hi;
#pragma unroll
      for (int f = 0; f < kFrags; ++f) {
        o[f][0] *= rescale_lo;
        o[f][1] *= rescale_lo;
        o[f][2] *= rescale_hi;
        o[f][3] *= rescale_hi;
      }

      // O += P V: fragment f holds dims 8f..8f+7.
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
#pragma unroll
        for (int f2 = 0; f2 < kFrags / 2; ++f2) {
          // Keys 16 kk + 0..15 (lanes 8..15 and 24..31 the second 8), dims
          // 16 f2 + 0..15 (lanes 16..31 the second 8).
          unsigned b[4];
          LoadMatricesTransposed(b, v_tile + (16 * kk + lane % 8 + 8 * (lane / 8 % 2)) * kRow +
                                        16 * f2 + 8 * (lane / 16));
          Mma<T>(o[2 * f2], p_frag[kk], b[0], b[1]);
          Mma<T>(o[2 * f2 + 1], p_frag[kk], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // this stage is read before the next tile's loads refill it
  }
  WaitCopies<0>();
  if (idle) return;
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);

  // Row r's output: o[f][2 hi], o[f][2 hi + 1] at dims 8f + 2t, + 1.
  auto write = [&](int r, float m, float l, int hi) {
    if (r >= count) return;
    if (kShared || merged) {
      // The shared pass: [m, l, acc] in the decode workspace's slot;
      // prefill's split: [m, l, 2 floats, acc] (PartialOf).
      float* part = kShared ? SharedPartialOf(sp, group_rows[r], h, split)
                            : PartialOf(p, first + r, h, split);
      float* acc = part + (kShared ? 2 : kPartialHead);
      if (t == 0) {
        part[0] = m;
        part[1] = l;
      }
#pragma unroll
      for (int f = 0; f < kFrags; ++f) {
        *reinterpret_cast<float2*>(acc + 8 * f + 2 * t) =
            make_float2(o[f][2 * hi], o[f][2 * hi + 1]);
      }
      return;
    }
    T* out = static_cast<T*>(p.out) + static_cast<int64_t>(first + r) * C + h * kD;
    const float inv = 1.0f / l;
    float unused = 0.0f;
#pragma unroll
    for (int f = 0; f < kFrags; ++f) {
      *reinterpret_cast<unsigned*>(out + 8 * f + 2 * t) =
          Pack<T>(o[f][2 * hi] * inv, o[f][2 * hi + 1] * inv, &unused);
    }
  };
  write(r_lo, m_lo, l_lo, 0);
  write(r_hi, m_hi, l_hi, 1);
}

}  // namespace

cudaError_t LaunchPrefillAttentionMma(const PrefillAttentionParams& p, cudaStream_t stream) {
  if (p.head_dim != kD || (p.dtype != DType::kBFloat16 && p.dtype != DType::kHalf)) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(p.heads, p.num_tiles, p.splits);
  const SharedPrefixAttentionParams none;
  if (p.dtype == DType::kBFloat16) {
    MmaAttentionKernel<__nv_bfloat16, false><<<grid, kThreads, 0, stream>>>(p, none);
  } else {
    MmaAttentionKernel<__half, false><<<grid, kThreads, 0, stream>>>(p, none);
  }
  return cudaGetLastError();
}

}  // namespace nanoserve::cuda::prefill

namespace nanoserve::cuda {

bool SharedPrefixAttentionTakes(DType dtype, int head_dim) {
  return (dtype == DType::kBFloat16 || dtype == DType::kHalf) && head_dim == prefill::kD;
}

cudaError_t LaunchSharedPrefixAttention(const SharedPrefixAttentionParams& p, cudaStream_t stream) {
  if (p.max_groups <= 0) return cudaSuccess;
  if (!SharedPrefixAttentionTakes(p.dtype, p.head_dim) || p.heads <= 0 || p.page_size <= 0 ||
      p.max_pages <= 0 || p.page_stride <= 0 || p.splits < 1 || p.shared_first < 0 ||
      p.shared_first + p.splits > p.slots || p.groups == nullptr || p.workspace == nullptr) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(p.heads, p.max_groups, p.splits);
  const PrefillAttentionParams none;
  if (p.dtype == DType::kBFloat16) {
    prefill::MmaAttentionKernel<__nv_bfloat16, true>
        <<<grid, prefill::kThreads, 0, stream>>>(none, p);
  } else {
    prefill::MmaAttentionKernel<__half, true><<<grid, prefill::kThreads, 0, stream>>>(none, p);
  }
  return cudaGetLastError();
}

}  // namespace nanoserve::cuda
