// Next-token selection from logits: greedy, temperature, top-k, top-p.
// Sampling draws from a seeded generator, so a seed fixes the output.
// Not thread safe: one Sampler per generation loop.
#ifndef NANOSERVE_ENGINE_SAMPLER_H_
#define NANOSERVE_ENGINE_SAMPLER_H_

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"

namespace nanoserve {

// Below these, sampling is greedy in all but rounding, and the arithmetic
// stops being computable (logits / temperature overflow; top_p underflows
// fp32): ValidateSamplingOptions refuses them.
inline constexpr double kMinTemperature = 1e-5;
inline constexpr double kMaxTemperature = 100.0;
inline constexpr double kMinTopP = 1e-6;

struct SamplingOptions {
  // 0 picks the most likely token (greedy); otherwise in [kMinTemperature,
  // kMaxTemperature], dividing the logits before sampling.
  double temperature = 0.0;
  // Keep only the k most likely tokens; 0 keeps all.
  int64_t top_k = 0;
  // Keep the smallest set of most likely tokens whose probability reaches
  // top_p; 1 keeps all. In [kMinTopP, 1].
  double top_p = 1.0;
  // Seed of the sampling generator.
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the first bad field.
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

class Sampler {
 public:
  // REQUIRES: ValidateSamplingOptions(options).ok().
  explicit Sampler(const SamplingOptions& options);

  // logits: (B, V) fp32 on any device. Returns one token id per row.
  std::vector<int64_t> Sample(const torch::Tensor& logits);

 private:
  SamplingOptions options_;
  at::Generator generator_;  // CPU generator: same draws on every device
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_SAMPLER_H_
