// Whole KV pages copied on one GPU by one kernel (CUDA builds only): page
// from_pages[i] of the pool at `from` to page to_pages[i] of the pool at
// `to`, each page `page_bytes` long. The page ids travel in the kernel's
// parameters (up to kCopyPagesPerLaunch pages a launch, more take more
// launches), so nothing is uploaded and nothing waits: the copy is ordered
// on `stream` like any kernel. LibTorch's index_select then index_copy_
// read and write every byte twice and upload each index list with a
// synchronous copy (a stream synchronisation each); this reads and writes
// each byte once. Plain CUDA C++ on raw pointers, no LibTorch here
// (page_layout.cc's CopyPages calls it for tensors).
#ifndef NANOSERVE_KV_CACHE_PAGE_COPY_CUDA_H_
#define NANOSERVE_KV_CACHE_PAGE_COPY_CUDA_H_

#include <cstdint>

#include <cuda_runtime_api.h>

namespace nanoserve::cuda {

// Pages one launch carries in its parameters (two int32 lists within the
// 4 KiB of kernel parameters every architecture allows).
inline constexpr int kCopyPagesPerLaunch = 448;

// Enqueues the copy of `n` pages on `stream`, on the current device, which
// must be able to address both pools (the same device, or a pool mapped
// into it over CUDA IPC). REQUIRES: `from`, `to` and page_bytes are
// multiples of 16 bytes; the page ids are in range; no page of `to` is
// written twice, and `from` and `to` do not overlap in the pages copied.
// Returns the first launch's error, or cudaSuccess.
cudaError_t LaunchCopyPages(const void* from, void* to, const int32_t* from_pages,
                            const int32_t* to_pages, int64_t n, int64_t page_bytes,
                            cudaStream_t stream);

}  // namespace nanoserve::cuda

#endif  // NANOSERVE_KV_CACHE_PAGE_COPY_CUDA_H_
