// Device helpers: parsing --device, synchronizing before a clock is
// read, and peak memory (the CUDA allocator's on GPU, the process's peak
// resident set on CPU).
#ifndef NANOSERVE_ENGINE_DEVICE_H_
#define NANOSERVE_ENGINE_DEVICE_H_

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

// "cpu" or "cuda" (or "cuda:N"); UNAVAILABLE for CUDA without a GPU.
absl::StatusOr<torch::Device> ParseDevice(absl::string_view name);
// ParseDtype and DtypeName: base/dtype.h.

// Waits for the device's queued work (no-op on CPU).
void Synchronize(const torch::Device& device);

struct MemoryStats {
  int64_t peak_bytes = 0;      // CUDA: allocator's peak allocated; CPU: peak RSS
  int64_t reserved_bytes = 0;  // CUDA: allocator's peak reserved; CPU: 0
  std::string source;          // "cuda-allocator" or "process-rss"
};

// Starts a new peak measurement (CUDA: resets the allocator's peak stats;
// CPU: resets the kernel's VmHWM through /proc/self/clear_refs).
void ResetPeakMemory(const torch::Device& device);
MemoryStats PeakMemory(const torch::Device& device);

// Gives memory that is cached but unused back to the system, so that the next
// peak measures what the next piece of work needs rather than what earlier
// work left cached (CUDA: empties the caching allocator; CPU: malloc_trim).
// Costs time: call it between measurements, not inside one.
void ReleaseCachedMemory(const torch::Device& device);

// Makes the C library keep freed host memory for reuse instead of mapping
// fresh pages for every large tensor (glibc maps blocks over 32 MiB anew
// each time, and first-touch page faults then cost more than the math: a
// batched CPU prefill of 4 x 528 tokens took 19.8 s before, 6.9 s after, on
// the 2-core dev VM). Freed memory over 1 GiB at the heap's top is still
// returned. Call once at the start of a process that runs the model on the
// CPU; a no-op on other C libraries.
void KeepFreedHostMemoryForReuse();

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_DEVICE_H_
