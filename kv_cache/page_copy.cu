#include "kv_cache/page_copy_cuda.h"

#include <algorithm>

namespace nanoserve::cuda {
namespace {

struct PagePairs {
  int32_t from[kCopyPagesPerLaunch];
  int32_t to[kCopyPagesPerLaunch];
};

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // 16-byte loads in flight per thread before their stores
constexpr int64_t kChunkVecs = static_cast<int64_t>(kThreads) * kUnroll * 4;  // 64 KiB a block

// Block (x, y) copies chunk x of pair y's page.
__global__ void CopyPagesKernel(const int4* __restrict__ from, int4* __restrict__ to,
                                PagePairs pairs, int64_t page_vecs) {
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kChunkVecs;
  const int64_t end = begin + kChunkVecs < page_vecs ? begin + kChunkVecs : page_vecs;
  const int4* src = from + static_cast<int64_t>(pairs.from[blockIdx.y]) * page_vecs;
  int4* dst = to + static_cast<int64_t>(pairs.to[blockIdx.y]) * page_vecs;
  for (int64_t v = begin + threadIdx.x; v < end; v += kUnroll * kThreads) {
    int4 held[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t w = v + k * kThreads;
      if (w < end) held[k] = src[w];
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t w = v + k * kThreads;
      if (w < end) dst[w] = held[k];
    }
  }
}

}  // namespace

cudaError_t LaunchCopyPages(const void* from, void* to, const int32_t* from_pages,
                            const int32_t* to_pages, int64_t n, int64_t page_bytes,
                            cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (page_bytes <= 0 || page_bytes % 16 != 0 || reinterpret_cast<uintptr_t>(from) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(to) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t page_vecs = page_bytes / 16;
  const unsigned chunks = static_cast<unsigned>((page_vecs + kChunkVecs - 1) / kChunkVecs);
  for (int64_t done = 0; done < n; done += kCopyPagesPerLaunch) {
    const int64_t count = std::min<int64_t>(kCopyPagesPerLaunch, n - done);
    PagePairs pairs;
    std::copy(from_pages + done, from_pages + done + count, pairs.from);
    std::copy(to_pages + done, to_pages + done + count, pairs.to);
    CopyPagesKernel<<<dim3(chunks, static_cast<unsigned>(count)), kThreads, 0, stream>>>(
        static_cast<const int4*>(from), static_cast<int4*>(to), pairs, page_vecs);
    if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace nanoserve::cuda
