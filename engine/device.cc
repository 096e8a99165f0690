#include "engine/device.h"

#include <malloc.h>

#include <fstream>
#include <sstream>

#include <torch/cuda.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#ifdef NANOSERVE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace nanoserve {

void KeepFreedHostMemoryForReuse() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);              // large blocks from the heap, reused
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // give back only over 1 GiB free
#endif
}

absl::StatusOr<torch::Device> ParseDevice(absl::string_view name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name == "cuda" || absl::StartsWith(name, "cuda:")) {
    if (!torch::cuda::is_available()) {
      return absl::UnavailableError(
          absl::StrCat("--device ", name, ": no CUDA GPU is available (this LibTorch ",
                       torch::cuda::is_available() ? "has" : "has no usable", " CUDA)"));
    }
    int index = 0;
    if (name.size() > 5 && !absl::SimpleAtoi(name.substr(5), &index)) {
      return absl::InvalidArgumentError(absl::StrCat("bad device '", name, "'"));
    }
    if (index < 0 || index >= static_cast<int>(torch::cuda::device_count())) {
      return absl::InvalidArgumentError(absl::StrCat("no CUDA device ", index));
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown device '", name, "' (cpu or cuda)"));
}

void Synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

namespace {

int64_t ReadStatusKb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, field)) {
      std::istringstream fields(line.substr(std::string(field).size()));
      int64_t kb = 0;
      fields >> kb;
      return kb;
    }
  }
  return 0;
}

}  // namespace

void ResetPeakMemory(const torch::Device& device) {
#ifdef NANOSERVE_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
    return;
  }
#endif
  std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM to the current RSS
}

MemoryStats PeakMemory(const torch::Device& device) {
  MemoryStats stats;
#ifdef NANOSERVE_WITH_CUDA
  if (device.is_cuda()) {
    auto s =
        c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    constexpr size_t kAll = 0;  // StatType::AGGREGATE (its namespace moved between versions)
    stats.peak_bytes = s.allocated_bytes[kAll].peak;
    stats.reserved_bytes = s.reserved_bytes[kAll].peak;
    stats.source = "cuda-allocator";
    return stats;
  }
#endif
  stats.peak_bytes = ReadStatusKb("VmHWM:") * 1024;
  stats.source = "process-rss";
  return stats;
}

void ReleaseCachedMemory(const torch::Device& device) {
#ifdef NANOSERVE_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::emptyCache();
    return;
  }
#endif
  (void)device;
  malloc_trim(0);
}

}  // namespace nanoserve
