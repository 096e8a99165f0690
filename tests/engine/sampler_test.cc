// The sampler: every option ValidateSamplingOptions accepts can be used.
#include "engine/sampler.h"

#include <limits>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace nanoserve {
namespace {

// Found by tests/fuzz/request_fuzzer: a temperature in (0, 1e-38) is valid,
// but logits / temperature overflowed to inf, softmax gave NaN and
// multinomial threw, which failed every request of the decode batch.
TEST(SamplerTest, TinyTemperatureSamplesTheBestToken) {
  const torch::Tensor logits = torch::tensor({{1.0f, 12.5f, -3.0f, 12.0f}});  // (1, V)
  for (double temperature : {std::numeric_limits<double>::denorm_min(), 1e-300, 1e-40}) {
    for (double top_p : {1.0, 0.5}) {
      SamplingOptions options;
      options.temperature = temperature;
      options.top_p = top_p;
      ASSERT_TRUE(ValidateSamplingOptions(options).ok());
      Sampler sampler(options);
      std::vector<int64_t> chosen;
      ASSERT_NO_THROW(chosen = sampler.Sample(logits)) << "temperature " << temperature;
      EXPECT_EQ(chosen, std::vector<int64_t>{1}) << "temperature " << temperature;
    }
  }
}

// Found by tests/fuzz/request_fuzzer: a top_p in (0, 1e-45) is valid but
// rounds to 0 as a float, so top-p dropped every token, the best one too.
TEST(SamplerTest, TinyTopPKeepsTheBestToken) {
  const torch::Tensor logits = torch::tensor({{1.0f, 2.5f, -3.0f, 2.0f}});  // (1, V)
  for (double top_p : {std::numeric_limits<double>::denorm_min(), 1e-300, 1e-6}) {
    SamplingOptions options;
    options.temperature = 1.0;
    options.top_p = top_p;
    ASSERT_TRUE(ValidateSamplingOptions(options).ok());
    Sampler sampler(options);
    std::vector<int64_t> chosen;
    ASSERT_NO_THROW(chosen = sampler.Sample(logits)) << "top_p " << top_p;
    EXPECT_EQ(chosen, std::vector<int64_t>{1}) << "top_p " << top_p;
  }
}

}  // namespace
}  // namespace nanoserve
