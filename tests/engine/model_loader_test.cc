// Model options from command-line names: every accepted name, and an error
// naming the value for anything else (no silent fallback).
#include "engine/model_loader.h"

#include <gtest/gtest.h>

namespace nanoserve {
namespace model_loader_test {

TEST(ModelLoaderTest, ParseModelOptionsAcceptsTheNamedValues) {
  auto o = ParseModelOptions("cpu", "bf16", "naive");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->device.type(), torch::kCPU);
  EXPECT_EQ(o->dtype, torch::kBFloat16);
  EXPECT_EQ(o->attention, AttentionKind::kNaive);
  auto fused = ParseModelOptions("cpu", "fp16", "fused");
  if (FusedAttentionAvailable()) {
    ASSERT_TRUE(fused.ok()) << fused.status();
    EXPECT_EQ(fused->attention, AttentionKind::kFused);
    EXPECT_EQ(fused->dtype, torch::kHalf);
  } else {  // LibTorch 1.x: refused up front, not at the first forward pass
    EXPECT_EQ(fused.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ModelLoaderTest, ParseModelOptionsNamesTheBadValue) {
  for (auto [device, dtype, attention, bad] :
       std::vector<std::tuple<const char*, const char*, const char*, const char*>>{
           {"tpu", "fp32", "naive", "tpu"},
           {"cpu", "int8", "naive", "int8"},
           {"cpu", "fp32", "flash", "flash"}}) {
    auto o = ParseModelOptions(device, dtype, attention);
    ASSERT_FALSE(o.ok()) << bad;
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(o.status().message().find(bad), std::string::npos) << o.status();
  }
}

}  // namespace model_loader_test
}  // namespace nanoserve
