// Where the time of a cuda-graph decode step goes, measured without a
// profiler: each kind of operation of the step, with the step's real shapes,
// is captured `reps` times into a CUDA graph of its own and timed on the
// device (events around replays); the figure is per step (times the layers
// for per-layer operations). The whole step's replay is timed the same way,
// so the difference is what the chain of ~10 small nodes a layer costs
// beyond the kernels themselves (launch latency between dependent nodes).
// CUDA builds only.
#ifndef NANOSERVE_ENGINE_CUDA_DECODE_PROFILE_H_
#define NANOSERVE_ENGINE_CUDA_DECODE_PROFILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/model.h"

namespace nanoserve::cuda {

struct OpTiming {
  std::string op;        // e.g. "qkv: addmm (cuBLAS)"
  int64_t per_step = 0;  // launches per decode step
  double us = 0;         // device time per step, microseconds
};

// Profiles the step over rows [0, rows) of `cache` at the rows' current
// lengths (each must be < capacity); writes K/V only at those positions.
// The last entry is the whole step ("step: graph replay").
absl::StatusOr<std::vector<OpTiming>> ProfileDecodeStep(const Gpt2Model& model, KvCache& cache,
                                                        int64_t rows, int reps = 20);

}  // namespace nanoserve::cuda

#endif  // NANOSERVE_ENGINE_CUDA_DECODE_PROFILE_H_
