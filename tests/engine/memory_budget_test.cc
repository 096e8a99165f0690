// The start-up memory arithmetic (engine/memory_budget.h): GPT-2's sizes,
// the refusal's message, and the free memory this machine reports.
#include "engine/memory_budget.h"

#include <gtest/gtest.h>

#include "engine/config.h"

namespace nanoserve {
namespace memory_budget_test {

TEST(MemoryBudgetTest, Gpt2SizesAreItsParametersAndKvPerToken) {
  const Gpt2Config gpt2 = Gpt2Preset("gpt2").value();
  // 124M parameters (tied lm_head counted once), 4 bytes each in fp32.
  EXPECT_EQ(WeightBytes(gpt2, torch::kFloat), gpt2.num_parameters() * 4);
  EXPECT_EQ(WeightBytes(gpt2, torch::kBFloat16), gpt2.num_parameters() * 2);
  EXPECT_NEAR(static_cast<double>(gpt2.num_parameters()), 124.4e6, 0.1e6);
  // K and V, 12 layers of 768 values: 73 728 bytes a token in fp32.
  EXPECT_EQ(KvBytesPerToken(gpt2, torch::kFloat), 2 * 12 * 768 * 4);
  EXPECT_EQ(KvBytesPerToken(gpt2, torch::kHalf), 2 * 12 * 768 * 2);
}

TEST(MemoryBudgetTest, CheckFitsNamesBothSizesAndTheAdvice) {
  const torch::Device cpu(torch::kCPU);
  EXPECT_TRUE(CheckFits(int64_t{1} << 30, int64_t{1} << 30, cpu, "x", "y").ok());
  const absl::Status refused = CheckFits(int64_t{3} << 30, int64_t{1} << 30, cpu,
                                         "the page pool (--pool_mb)", "lower --pool_mb");
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.message(),
            "the page pool (--pool_mb) need 3.00 GiB on cpu, which has 1.00 GiB free: lower "
            "--pool_mb");
}

TEST(MemoryBudgetTest, TheCpuReportsSomeFreeMemoryButNotAnAbsurdAmount) {
  absl::StatusOr<int64_t> available = AvailableMemory(torch::Device(torch::kCPU));
  ASSERT_TRUE(available.ok()) << available.status();
  EXPECT_GT(*available, int64_t{16} << 20);
  EXPECT_LT(*available, int64_t{1} << 50);  // under a PiB: not an unset cgroup "max"
}

}  // namespace memory_budget_test
}  // namespace nanoserve
