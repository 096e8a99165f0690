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

double Sampler::NextUniform() {
  return torch::rand({1}, generator_, torch::TensorOptions().dtype(torch::kDouble)).item<double>();
}

absl::StatusOr<std::vector<int64_t>> Sampler::Sample(const torch::Tensor& logits) {
  std::vector<Sampler*> rows(logits.size(0), this);
  std::vector<int64_t> tokens;
  for (auto& token : SampleRows(logits, rows)) {
    if (!token.ok()) return token.status();
    tokens.push_back(*token);
  }
  return tokens;
}

std::vector<absl::StatusOr<int64_t>> SampleRows(const torch::Tensor& logits,
                                                const std::vector<Sampler*>& samplers) {
  torch::InferenceMode guard;
  const int64_t n = logits.size(0), vocab = logits.size(1);
  TORCH_CHECK(static_cast<int64_t>(samplers.size()) == n, "SampleRows: ", samplers.size(),
              " samplers for ", n, " rows");
  const torch::Device device = logits.device();
  // Per row: the divisor (a nonzero float: a tiny valid temperature acts
  // as its limit, greedy, rather than give inf / NaN), p, the uniform,
  // whether greedy, k; as the rows of one (5, n) fp32 tensor, so that a
  // sampled batch copies its parameters to the device once (k exact: below
  // 2^24).
  enum Param : int64_t { kTemperature, kTopP, kUniform, kGreedy, kTopK, kParams };
  std::vector<float> params(kParams * n);
  auto param = [&](Param which, int64_t r) -> float& { return params[which * n + r]; };
  bool any_sampled = false, any_top_k = false, any_top_p = false;
  int64_t max_k = 0;
  for (int64_t r = 0; r < n; ++r) {
    const SamplingOptions& o = samplers[r]->options();
    const bool greedy = o.temperature == 0.0;
    param(kGreedy, r) = greedy ? 1.0f : 0.0f;
    any_sampled = any_sampled || !greedy;
    param(kTemperature, r) =
        greedy ? 1.0f : std::max<float>(o.temperature, std::numeric_limits<float>::min());
    const int64_t k = !greedy && o.top_k > 0 && o.top_k < vocab ? o.top_k : 0;
    param(kTopK, r) = static_cast<float>(k);
    param(kTopP, r) = !greedy && o.top_p < 1.0 ? static_cast<float>(o.top_p)
                                               : std::numeric_limits<float>::infinity();
    // Below 1 also as a float, so that the draw never lands past the CDF.
    param(kUniform, r) =
        greedy ? 0.0f : static_cast<float>(std::min(samplers[r]->NextUniform(), 0.99999994));
    any_top_k = any_top_k || k > 0;
    any_top_p = any_top_p || (!greedy && o.top_p < 1.0);
    max_k = std::max(max_k, k);
  }
  torch::Tensor on_device;  // (kParams, n)
  if (any_sampled) {
    on_device = torch::from_blob(params.data(), {kParams, n}, torch::kFloat).to(device);
  }
  auto column = [&](Param which) { return on_device[which].view({n, 1}); };  // (n, 1)
  torch::Tensor l = logits.to(torch::kFloat);                                // (n, V)
  torch::Tensor finite = torch::isfinite(l).all(-1);                         // (n,)
  torch::Tensor best = l.argmax(-1);                                         // (n,) greedy choice
  torch::Tensor chosen = best;
  if (any_sampled) {
    const float kMinusInf = -std::numeric_limits<float>::infinity();
    // Non-finite rows are answered with an error below; zeroed here so that
    // they do not disturb the arithmetic of the batch.
    l = torch::where(finite.unsqueeze(1), l, torch::zeros_like(l));
    l = (l - std::get<0>(l.max(-1, /*keepdim=*/true))) / column(kTemperature);
    if (any_top_k) {
      torch::Tensor k = column(kTopK).to(torch::kLong);
      torch::Tensor kth = std::get<0>(l.topk(max_k, -1))                 // (n, max_k)
                              .gather(1, (k - 1).clamp_min(0));          // (n, 1)
      kth = torch::where(k > 0, kth, torch::full_like(kth, kMinusInf));  // k = 0 keeps all
      l = l.masked_fill(l < kth, kMinusInf);
    }
    if (any_top_p) {
      auto [sorted, order] = l.sort(-1, /*descending=*/true);
      torch::Tensor probs = sorted.softmax(-1);
      // Drop a token once the tokens before it already reach top_p; the
      // best always stays (a top_p that rounds to 0 as a float would drop it).
      torch::Tensor drop_sorted = (probs.cumsum(-1) - probs) >= column(kTopP);
      drop_sorted.narrow(-1, 0, 1).fill_(false);
      l = l.masked_fill(torch::zeros_like(drop_sorted).scatter(-1, order, drop_sorted), kMinusInf);
    }
    torch::Tensor cdf = l.softmax(-1).cumsum(-1);  // (n, V)
    torch::Tensor target = column(kUniform) * cdf.narrow(-1, vocab - 1, 1);
    torch::Tensor drawn =
        torch::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).clamp_max(vocab - 1);
    chosen = torch::where(column(kGreedy).view({n}) > 0, best, drawn.view({n}));
  }
  torch::Tensor host = torch::stack({chosen, finite.to(torch::kLong)}).cpu();  // (2, n)
  auto a = host.accessor<int64_t, 2>();
  std::vector<absl::StatusOr<int64_t>> out;
  for (int64_t r = 0; r < n; ++r) {
    if (a[1][r] == 0) {
      out.push_back(absl::InvalidArgumentError(
          absl::StrCat("row ", r, ": logits hold NaN or infinity; nothing to sample")));
    } else {
      out.push_back(a[0][r]);
    }
  }
  return out;
}

}  // namespace nanoserve
