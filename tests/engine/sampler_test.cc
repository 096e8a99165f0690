// The sampler: every option ValidateSamplingOptions accepts can be used;
// draws follow the filtered distribution, on the test device, reproducibly
// for a seed and whatever else is in the batch.
#include "engine/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "tests/test_util/model.h"

namespace nanoserve {
namespace sampler_test {

torch::Tensor DeviceLogits(const std::vector<float>& row) {
  return torch::tensor(row).view({1, -1}).to(testing::TestDevice());
}

// Found by tests/fuzz/request_fuzzer: a temperature in (0, 1e-38) was
// valid, but logits / temperature overflowed to inf, softmax gave NaN and
// multinomial threw, which failed every request of the decode batch. Such
// values are now refused, and the smallest accepted ones act as greedy.
TEST(SamplerTest, TinyTemperaturesAreRefusedAndTheMinimumSamplesTheBestToken) {
  for (double temperature : {std::numeric_limits<double>::denorm_min(), 1e-300, 1e-40, 9e-6}) {
    SamplingOptions options;
    options.temperature = temperature;
    EXPECT_EQ(ValidateSamplingOptions(options).code(), absl::StatusCode::kInvalidArgument)
        << temperature;
  }
  const torch::Tensor logits = DeviceLogits({1.0f, 12.5f, -3.0f, 12.0f});  // (1, V)
  for (double top_p : {1.0, 0.5}) {
    SamplingOptions options;
    options.temperature = kMinTemperature;
    options.top_p = top_p;
    ASSERT_TRUE(ValidateSamplingOptions(options).ok());
    Sampler sampler(options);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.Sample(logits).value(), std::vector<int64_t>{1});
  }
}

// Found by tests/fuzz/request_fuzzer: a top_p in (0, 1e-45) rounded to 0 as
// a float, so top-p dropped every token, the best one too. Such values are
// now refused; the smallest accepted one keeps the best token.
TEST(SamplerTest, TinyTopPIsRefusedAndTheMinimumKeepsTheBestToken) {
  for (double top_p : {std::numeric_limits<double>::denorm_min(), 1e-300, 1e-7}) {
    SamplingOptions options;
    options.temperature = 1.0;
    options.top_p = top_p;
    EXPECT_EQ(ValidateSamplingOptions(options).code(), absl::StatusCode::kInvalidArgument) << top_p;
  }
  SamplingOptions options;
  options.temperature = 1.0;
  options.top_p = kMinTopP;
  Sampler sampler(options);
  const torch::Tensor logits = DeviceLogits({1.0f, 2.5f, -3.0f, 2.0f});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.Sample(logits).value(), std::vector<int64_t>{1});
}

// Frequencies of `draws` samples of one row, each a fresh call (one uniform).
std::map<int64_t, int> Histogram(Sampler& sampler, const torch::Tensor& logits, int draws) {
  std::map<int64_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits).value()[0]];
  return counts;
}

// Expects count/draws within 4.5 standard deviations of p.
void ExpectFrequency(int count, int draws, double p, const std::string& what) {
  const double sd = std::sqrt(p * (1 - p) / draws);
  EXPECT_NEAR(static_cast<double>(count) / draws, p, 4.5 * sd + 1e-9) << what;
}

TEST(SamplerTest, TemperatureOneFollowsTheSoftmax) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, -1.0f};
  SamplingOptions options;
  options.temperature = 1.0;
  options.seed = 11;
  Sampler sampler(options);
  const int draws = 3000;
  auto counts = Histogram(sampler, DeviceLogits(logits), draws);
  const torch::Tensor probs = torch::tensor(logits).softmax(0);
  for (int64_t t = 0; t < 4; ++t) {
    ExpectFrequency(counts[t], draws, probs[t].item<double>(), "token " + std::to_string(t));
  }
}

TEST(SamplerTest, TopKNeverPicksOutsideTheK) {
  torch::manual_seed(5);
  const torch::Tensor logits = torch::randn({1, 300}).to(testing::TestDevice());
  SamplingOptions options;
  options.temperature = 2.0;  // flatten: all of the k get drawn
  options.top_k = 5;
  Sampler sampler(options);
  const torch::Tensor top = std::get<1>(logits.cpu().topk(5, -1))[0];
  auto counts = Histogram(sampler, logits, 1000);
  int inside = 0;
  for (const auto& [token, count] : counts) {
    EXPECT_TRUE((top == token).any().item<bool>()) << "token " << token << " outside the top 5";
    inside += count;
  }
  EXPECT_EQ(inside, 1000);
  EXPECT_EQ(counts.size(), 5u);
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps the first two
  // (0.5 < 0.7 <= 0.8), renormalized to 5/8 and 3/8.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  SamplingOptions options;
  options.temperature = 1.0;
  options.top_p = 0.7;
  options.seed = 3;
  Sampler sampler(options);
  const int draws = 3000;
  auto counts = Histogram(sampler, DeviceLogits(logits), draws);
  EXPECT_EQ(counts[2] + counts[3], 0);
  ExpectFrequency(counts[0], draws, 5.0 / 8, "token 0");
  ExpectFrequency(counts[1], draws, 3.0 / 8, "token 1");
}

// A row's draws depend on its seed and logits only: alone or in a batch
// with other rows (greedy or sampled, other options), the same tokens.
TEST(SamplerTest, RowsAreReproducibleForASeedWhateverTheBatch) {
  torch::manual_seed(9);
  const torch::Tensor logits = torch::randn({3, 50}).to(testing::TestDevice());
  SamplingOptions sampled;
  sampled.temperature = 0.8;
  sampled.top_p = 0.9;
  sampled.seed = 42;
  SamplingOptions other = sampled;
  other.seed = 7;
  other.top_k = 3;
  Sampler alone(sampled), in_batch(sampled), neighbour(other), greedy(SamplingOptions{});
  for (int step = 0; step < 50; ++step) {
    const int64_t a = alone.Sample(logits.narrow(0, 1, 1)).value()[0];
    auto batch = SampleRows(logits, {&greedy, &in_batch, &neighbour});
    ASSERT_TRUE(batch[1].ok());
    EXPECT_EQ(*batch[1], a) << "step " << step;
    EXPECT_EQ(*batch[0], logits[0].argmax().item<int64_t>());
  }
}

TEST(SamplerTest, ANonFiniteRowFailsAloneAndOthersAreSampled) {
  torch::Tensor logits = torch::randn({3, 20});
  logits[1][4] = std::numeric_limits<float>::quiet_NaN();
  logits = logits.to(testing::TestDevice());
  SamplingOptions options;
  options.temperature = 1.0;
  Sampler a(options), b(options), c(SamplingOptions{});
  auto rows = SampleRows(logits, {&a, &b, &c});
  EXPECT_TRUE(rows[0].ok());
  EXPECT_EQ(rows[1].status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(rows[2].ok());
  EXPECT_EQ(*rows[2], logits[2].argmax().item<int64_t>());
  EXPECT_EQ(b.Sample(logits).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace sampler_test
}  // namespace nanoserve
