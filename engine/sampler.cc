#include "engine/sampler.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::Status ValidateSamplingOptions(const SamplingOptions& o) {
  if (!(o.temperature == 0.0 ||
        (o.temperature >= kMinTemperature && o.temperature <= kMaxTemperature))) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be 0 (greedy) or in [",
                                                   kMinTemperature, ", ", kMaxTemperature,
                                                   "], got ", o.temperature));
  }
  if (o.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", o.top_k));
  }
  if (!(o.top_p >= kMinTopP && o.top_p <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in [", kMinTopP, ", 1], got ", o.top_p));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options)
    : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(options.seed)) {}

std::vector<int64_t> Sampler::Sample(const torch::Tensor& logits) {
  torch::InferenceMode guard;
  torch::Tensor chosen;
  if (options_.temperature == 0.0) {
    chosen = logits.argmax(-1);  // (B,)
  } else {
    // A tiny valid temperature must act as its limit, greedy, not give NaN
    // (softmax of inf; 0/0 once it rounds to 0 as a float), which made
    // multinomial throw. So each row's best logit is shifted to 0 and the
    // others go to -inf at worst, and the divisor is a nonzero float.
    const float temperature =
        std::max<float>(options_.temperature, std::numeric_limits<float>::min());
    torch::Tensor l = logits.to(torch::kCPU, torch::kFloat);  // (B, V)
    l = (l - std::get<0>(l.max(-1, /*keepdim=*/true))) / temperature;
    const float kMinusInf = -std::numeric_limits<float>::infinity();
    if (options_.top_k > 0 && options_.top_k < l.size(-1)) {
      auto kth = std::get<0>(l.topk(options_.top_k, -1)).narrow(-1, options_.top_k - 1, 1);
      l = l.masked_fill(l < kth, kMinusInf);
    }
    if (options_.top_p < 1.0) {
      auto [sorted, order] = l.sort(-1, /*descending=*/true);
      auto cum = sorted.softmax(-1).cumsum(-1);
      // Drop a token once the tokens before it already reach top_p.
      auto drop_sorted = (cum - sorted.softmax(-1)) >= options_.top_p;
      // The best token always stays: a top_p that rounds to 0 as a float
      // would drop it too, leaving nothing to sample.
      drop_sorted.narrow(-1, 0, 1).fill_(false);
      auto drop = torch::zeros_like(drop_sorted).scatter(-1, order, drop_sorted);
      l = l.masked_fill(drop, kMinusInf);
    }
    chosen = torch::multinomial(l.softmax(-1), 1, /*replacement=*/false, generator_).squeeze(-1);
  }
  chosen = chosen.to(torch::kCPU, torch::kLong).contiguous();
  return std::vector<int64_t>(chosen.data_ptr<int64_t>(),
                              chosen.data_ptr<int64_t>() + chosen.numel());
}

}  // namespace nanoserve
