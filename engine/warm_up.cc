#include "engine/warm_up.h"

#include <algorithm>
#include <utility>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace nanoserve {

std::vector<WarmUpShape> WarmUpShapes(int64_t max_rows, int64_t max_tokens, int64_t capacity) {
  std::vector<WarmUpShape> shapes;
  // Room for the prompt and two new tokens in a slot.
  const int64_t longest = std::min(kWarmUpPromptTokens, capacity - 2);
  if (longest < 1) return shapes;
  shapes.push_back({1, std::min<int64_t>(16, longest)});
  const int64_t tokens = std::min(longest, max_tokens);
  const int64_t rows = std::min(max_rows, max_tokens / tokens);
  if (rows > 1) shapes.push_back({rows, tokens});
  return shapes;
}

std::vector<std::vector<int>> WarmUpPrompts(const WarmUpShape& shape, int64_t vocab_size) {
  std::vector<std::vector<int>> prompts(shape.rows);
  for (int64_t r = 0; r < shape.rows; ++r) {
    for (int64_t t = 0; t < shape.tokens; ++t) {
      prompts[r].push_back(static_cast<int>((r * 7 + t) % vocab_size));
    }
  }
  return prompts;
}

bool WorthWarmingUp(torch::Device device) { return device.is_cuda(); }

absl::StatusOr<double> WarmUpScheduler(BatchScheduler& scheduler,
                                       absl::Span<const WarmUpShape> shapes, int64_t vocab_size) {
  const absl::Time start = absl::Now();
  for (const WarmUpShape& shape : shapes) {
    std::vector<BatchRequest> requests;
    for (std::vector<int>& prompt : WarmUpPrompts(shape, vocab_size)) {
      BatchRequest r;
      r.prompt = std::move(prompt);
      r.max_new_tokens = 2;
      r.stop_at_end_of_text = false;
      requests.push_back(std::move(r));
    }
    absl::BlockingCounter done(static_cast<int>(requests.size()));
    absl::Mutex mu;
    absl::Status first = absl::OkStatus();
    for (BatchRequest& r : requests) {
      r.on_done = [&](const absl::Status& status, const BatchResult&) {
        {
          absl::MutexLock lock(&mu);
          if (first.ok()) first = status;
        }
        done.DecrementCount();
      };
    }
    if (absl::StatusOr<std::vector<uint64_t>> ids = scheduler.SubmitBatch(std::move(requests));
        !ids.ok()) {
      return ids.status();
    }
    done.Wait();
    absl::MutexLock lock(&mu);
    if (!first.ok()) return first;
  }
  return absl::ToDoubleMilliseconds(absl::Now() - start);
}

}  // namespace nanoserve
