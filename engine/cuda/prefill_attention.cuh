// What the prefill attention kernels (prefill_attention.cu, the FMA and
// nvcuda::wmma ones and the launcher; prefill_attention_mma.cu, the
// register-form one) share: the split of a tile's keys into ranges and the
// ranges' partial results.
#ifndef NANOSERVE_ENGINE_CUDA_PREFILL_ATTENTION_CUH_
#define NANOSERVE_ENGINE_CUDA_PREFILL_ATTENTION_CUH_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/cuda/kernels.h"

namespace nanoserve::cuda::prefill {

constexpr int kRangeKeys = 64;   // a split range is whole tiles of this many keys
constexpr int kPartialHead = 4;  // floats before a partial result's acc
static_assert(kPartialHead == kPrefillPartialHead, "kernels.h's workspace size");

// A tile's keys 0..keys-1 cut into `splits` ranges of whole kRangeKeys:
// range s is [begin, end), empty past the keys. `merged`: more than one
// range holds keys, so the ranges write partial results for the merge; else
// range 0 holds them all and writes the output itself.
struct KeyRange {
  int begin, end;
  bool merged;
  __device__ __forceinline__ KeyRange(int keys, int splits, int s) {
    const int chunk = ((keys + splits - 1) / splits + kRangeKeys - 1) / kRangeKeys * kRangeKeys;
    begin = min(s * chunk, keys);
    end = min(begin + chunk, keys);
    merged = chunk < keys;
  }
};

// Token `token`'s partial result for head h and range s: m, l, two floats
// of padding (so that acc is 16-byte aligned), acc[0..head_dim).
__device__ __forceinline__ float* PartialOf(const PrefillAttentionParams& p, int token, int h,
                                            int s) {
  return p.workspace +
         ((static_cast<int64_t>(token) * p.heads + h) * p.splits + s) * (p.head_dim + kPartialHead);
}

// exp(x - m) where m may be -inf (a query that has seen no key yet): 0.
__device__ __forceinline__ float Finite(float m) { return m == -INFINITY ? 0.0f : m; }

// What block (head, tile, split) of a tensor-core kernel takes: its tile's
// queries (consecutive tokens of one row) and its range of the keys they
// see, 0..keys-1. Take: false if the block has nothing to do (no tile, or a
// range past its keys, for which it has written its queries' empty partial
// results for the merge to skip), threads `threads` a block.
struct BlockTile {
  int h, split, first, count;
  int begin, end;        // the keys [begin, end)
  bool merged;           // KeyRange::merged
  const int32_t* table;  // the row's block table

  __device__ __forceinline__ bool Take(const PrefillAttentionParams& p, int threads) {
    h = blockIdx.x, split = blockIdx.z;
    first = p.tiles[2 * blockIdx.y], count = p.tiles[2 * blockIdx.y + 1];
    if (count <= 0) return false;
    const KeyRange range(p.positions[first + count - 1] + 1, p.splits, split);
    begin = range.begin, end = range.end, merged = range.merged;
    if (begin == end) {
      for (int r = threadIdx.x; merged && r < count; r += threads) {
        float* part = PartialOf(p, first + r, h, split);
        part[0] = -INFINITY;
        part[1] = 0.0f;
      }
      return false;
    }
    table = p.block_table + static_cast<int64_t>(p.table_rows[first]) * p.max_pages;
    return true;
  }
};

// The register-form tensor-core kernel's launch (prefill_attention_mma.cu):
// bf16 or fp16, head size 64, the split's merge left to the caller.
cudaError_t LaunchPrefillAttentionMma(const PrefillAttentionParams& p, cudaStream_t stream);

}  // namespace nanoserve::cuda::prefill

#endif  // NANOSERVE_ENGINE_CUDA_PREFILL_ATTENTION_CUH_
