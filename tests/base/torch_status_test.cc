// RunTorch / TorchResult: the one place LibTorch exceptions become statuses.
#include "base/torch_status.h"

#include <gtest/gtest.h>
#include <torch/types.h>

#include <new>
#include <string>

namespace nanoserve {
namespace torch_status_test {

TEST(TorchStatusTest, OkWhenNothingThrows) {
  int ran = 0;
  EXPECT_TRUE(RunTorch("work", [&] { ++ran; }).ok());
  EXPECT_EQ(ran, 1);
  absl::StatusOr<int> value = TorchResult("work", [] { return 7; });
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, 7);
}

TEST(TorchStatusTest, LibTorchErrorsAreInternalWithTheirMessage) {
  absl::Status s = RunTorch("multiplying", [] {
    torch::matmul(torch::ones({2, 3}), torch::ones({4, 5}));  // shapes do not fit
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message().rfind("multiplying: ", 0), 0u) << s;
  EXPECT_EQ(std::string(s.message()).find("Exception raised from"), std::string::npos)
      << "no backtrace: " << s;
}

TEST(TorchStatusTest, OutOfMemoryIsResourceExhausted) {
  absl::Status s = RunTorch("allocating", [] {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2 GiB");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(RunTorch("host", [] { throw std::bad_alloc(); }).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(TorchStatusTest, StatusesOfTheBodyPassThrough) {
  absl::Status s = TorchResult("work", [] { return absl::NotFoundError("no lease 3"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  absl::StatusOr<int> v =
      TorchResult("work", []() -> absl::StatusOr<int> { return absl::AbortedError("x"); });
  EXPECT_EQ(v.status().code(), absl::StatusCode::kAborted);
  absl::StatusOr<int> thrown = TorchResult("work", []() -> absl::StatusOr<int> {
    TORCH_CHECK(false, "bad");
    return 1;
  });
  EXPECT_EQ(thrown.status().code(), absl::StatusCode::kInternal);
}

}  // namespace torch_status_test
}  // namespace nanoserve
