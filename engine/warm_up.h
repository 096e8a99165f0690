// Warm-up before serving. A GPU pays one-time costs the first time a
// process runs a shape: CUDA modules loaded lazily kernel by kernel, cuBLAS
// workspaces and the caching allocator's first blocks. Unwarmed, the first
// requests wait for them: on an H100 a prefill service's first batch of 64
// prompts of 128 tokens took 290 ms of forward pass where a warm one takes
// 20 ms, and decode alone queued the first wave for 180 ms. So a service
// runs a few passes of synthetic prompts before it says it is serving.
//
// Thread-compatible: plain functions; WarmUpScheduler may be called while
// nothing else uses the scheduler.
#ifndef NANOSERVE_ENGINE_WARM_UP_H_
#define NANOSERVE_ENGINE_WARM_UP_H_

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/batch_scheduler.h"

namespace nanoserve {

// `rows` prompts of `tokens` tokens each, run together.
struct WarmUpShape {
  int64_t rows = 1;
  int64_t tokens = 1;
  bool operator==(const WarmUpShape& other) const {
    return rows == other.rows && tokens == other.tokens;
  }
};

// The passes worth running: one short prompt alone, then as many prompts of
// up to kWarmUpPromptTokens tokens as a batch may hold (at most max_rows;
// rows x tokens at most max_tokens), each prompt shorter than `capacity`
// (a slot's context, which also holds the new tokens). Empty when nothing
// fits. REQUIRES: all >= 1.
inline constexpr int64_t kWarmUpPromptTokens = 128;
std::vector<WarmUpShape> WarmUpShapes(int64_t max_rows, int64_t max_tokens, int64_t capacity);

// Synthetic prompts of `shape`: token ids counting up from each row's own
// start, below `vocab_size`.
std::vector<std::vector<int>> WarmUpPrompts(const WarmUpShape& shape, int64_t vocab_size);

// Whether a service on `device` warms up: a CUDA device (on the CPU there is
// no such first-time cost worth a start-up pass).
bool WorthWarmingUp(torch::Device device);

// Runs each shape through `scheduler` as requests submitted together (one
// batched prefill, then a decode step: two new tokens each), and waits for
// them. Returns the milliseconds it took, or the first request's error.
// The scheduler is as it was after (every slot and page free again).
absl::StatusOr<double> WarmUpScheduler(BatchScheduler& scheduler,
                                       absl::Span<const WarmUpShape> shapes, int64_t vocab_size);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_WARM_UP_H_
