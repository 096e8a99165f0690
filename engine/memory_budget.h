// What a model and its KV pool need in memory, and what the device has, so
// that a service refuses at start (a clear error, exit 2) a --max_batch,
// --kv_pool_tokens or --pool_mb the device cannot hold, instead of aborting
// or swapping later (the issue's --max_batch 1024 with GPT-2: SIGABRT).
//
// Thread safety: thread-safe (no state).
#ifndef NANOSERVE_ENGINE_MEMORY_BUDGET_H_
#define NANOSERVE_ENGINE_MEMORY_BUDGET_H_

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/config.h"

namespace nanoserve {

// Bytes of the model's weights in `dtype` (config.num_parameters()).
int64_t WeightBytes(const Gpt2Config& config, torch::Dtype dtype);

// Bytes of K and V of one token over every layer, in `dtype`.
int64_t KvBytesPerToken(const Gpt2Config& config, torch::Dtype dtype);

// Memory free for new allocations on `device`. CUDA: the driver's free
// memory on that GPU (cudaMemGetInfo). CPU: the kernel's MemAvailable
// (/proc/meminfo), lowered to the cgroup's limit minus its usage where the
// process runs under a memory limit (cgroup v2 memory.max, a container's).
// UNAVAILABLE if it cannot be read.
absl::StatusOr<int64_t> AvailableMemory(const torch::Device& device);

// OK if `needed` bytes fit in `available`; else RESOURCE_EXHAUSTED:
// "<what> need(s) X GiB on <device>, which has Y GiB free: <advice>".
absl::Status CheckFits(int64_t needed, int64_t available, const torch::Device& device,
                       absl::string_view what, absl::string_view advice);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_MEMORY_BUDGET_H_
