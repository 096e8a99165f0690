// Next-token selection from logits: greedy, temperature, top-k, top-p.
// Sampling draws from a seeded generator, so a seed fixes the output.
// Not thread safe: one Sampler per generation loop.
#ifndef NANOSERVE_ENGINE_SAMPLER_H_
#define NANOSERVE_ENGINE_SAMPLER_H_

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

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

// Sampling runs on the logits' device (a GPU needs no copy of the logits
// to the host): each row's logits are shifted so that its best is 0,
// divided by the temperature, cut to the top_k best and to the smallest set
// reaching top_p, and a token is drawn by inverse CDF with one uniform number
// per row from the row's own seeded generator (drawn on the host, so a seed
// gives the same draws on every device, and a row's tokens do not depend on
// what else is in the batch).
class Sampler {
 public:
  // REQUIRES: ValidateSamplingOptions(options).ok().
  explicit Sampler(const SamplingOptions& options);

  const SamplingOptions& options() const { return options_; }

  // logits: (B, V) fp32 on any device. Returns one token id per row, every
  // row drawn with this sampler's options and generator (rows in order).
  // INVALID_ARGUMENT (the first such row's) if a row's logits are not finite.
  absl::StatusOr<std::vector<int64_t>> Sample(const torch::Tensor& logits);

  // A uniform number in [0, 1) from this sampler's generator.
  double NextUniform();

 private:
  SamplingOptions options_;
  at::Generator generator_;  // CPU generator: same draws on every device
};

// One token per row of `logits` ((n, V) fp32 on any device), row r drawn
// with samplers[r]'s options and generator, all rows in a few batched
// operations on the logits' device and one copy of n tokens to the host.
// A row whose logits hold NaN or infinity gets INVALID_ARGUMENT (its own
// trouble: the other rows are unaffected). REQUIRES: samplers.size() == n.
std::vector<absl::StatusOr<int64_t>> SampleRows(const torch::Tensor& logits,
                                                const std::vector<Sampler*>& samplers);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_SAMPLER_H_
