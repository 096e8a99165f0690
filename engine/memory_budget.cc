#include "engine/memory_budget.h"

#include <algorithm>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

#ifdef NANOSERVE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace nanoserve {
namespace {

// The first line of `path` as a number; -1 if absent or not a number ("max").
int64_t ReadNumber(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  int64_t value = -1;
  if (!std::getline(in, line) || !absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &value)) {
    return -1;
  }
  return value;
}

// MemAvailable of /proc/meminfo in bytes, or -1.
int64_t MemAvailable() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, "MemAvailable:")) continue;
    rest = absl::StripAsciiWhitespace(rest);
    absl::ConsumeSuffix(&rest, "kB");
    int64_t kib = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kib)) return kib << 10;
  }
  return -1;
}

std::string GiB(int64_t bytes) {
  return absl::StrFormat("%.2f GiB", static_cast<double>(bytes) / (int64_t{1} << 30));
}

#ifdef NANOSERVE_WITH_CUDA
// The driver's free memory on GPU `index` (cudaMemGetInfo reports the
// current device's, so `index` is made current for the call and the
// caller's device restored). A failure is cleared (cudaGetLastError) so it
// does not surface in LibTorch's next CUDA call.
absl::StatusOr<int64_t> CudaFreeMemory(int index, const std::string& name) {
  int previous = 0;
  cudaError_t error = cudaGetDevice(&previous);
  if (error == cudaSuccess) error = cudaSetDevice(index);
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  if (error == cudaSuccess) {
    error = cudaMemGetInfo(&free_bytes, &total_bytes);
    cudaSetDevice(previous);
  }
  if (error != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("cudaMemGetInfo on ", name, ": ", cudaGetErrorString(error)));
  }
  return static_cast<int64_t>(free_bytes);
}
#endif

}  // namespace

int64_t WeightBytes(const Gpt2Config& config, torch::Dtype dtype) {
  return config.num_parameters() * static_cast<int64_t>(c10::elementSize(dtype));
}

int64_t KvBytesPerToken(const Gpt2Config& config, torch::Dtype dtype) {
  return 2 * config.n_layer * config.n_embd * static_cast<int64_t>(c10::elementSize(dtype));
}

absl::StatusOr<int64_t> AvailableMemory(const torch::Device& device) {
  if (device.is_cuda()) {
#ifdef NANOSERVE_WITH_CUDA
    return CudaFreeMemory(device.has_index() ? device.index() : 0, device.str());
#else
    return absl::UnavailableError(
        absl::StrCat("cannot read the free memory of ", device.str(), ": this build has no CUDA"));
#endif
  }
  int64_t available = MemAvailable();
  if (available < 0) return absl::UnavailableError("cannot read MemAvailable in /proc/meminfo");
  const int64_t limit = ReadNumber("/sys/fs/cgroup/memory.max");
  const int64_t used = ReadNumber("/sys/fs/cgroup/memory.current");
  if (limit > 0 && used >= 0) available = std::min(available, std::max<int64_t>(0, limit - used));
  return available;
}

absl::Status CheckFits(int64_t needed, int64_t available, const torch::Device& device,
                       absl::string_view what, absl::string_view advice) {
  if (needed <= available) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(what, " need ", GiB(needed), " on ",
                                                   device.str(), ", which has ", GiB(available),
                                                   " free: ", advice));
}

}  // namespace nanoserve
