#include "engine/safetensors.h"

#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "tests/test_util/temp_path.h"

namespace nanoserve {
namespace safetensors_test {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return ::nanoserve::testing::ProcessTempPath("safetensors_test_" + name);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A file made of a raw header (no padding) and `data`.
std::string MakeFile(const std::string& header, const std::string& data) {
  const uint64_t size = header.size();
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &size, 8);
  return bytes + header + data;
}

TEST(SafetensorsTest, RoundTripsDtypesAndMetadata) {
  torch::manual_seed(0);
  const TensorMap tensors = {
      {"f32", torch::randn({3, 5})},
      {"f16", torch::randn({4, 2, 3}).to(torch::kFloat16)},
      {"bf16", torch::randn({7}).to(torch::kBFloat16)},
      {"f64", torch::randn({2, 2}, torch::kFloat64)},
      {"i64", torch::arange(6, torch::kInt64).reshape({2, 3})},
      {"i32", torch::arange(4, torch::kInt32)},
      {"scalar", torch::tensor(3.5f).reshape({})},
      {"empty", torch::zeros({0, 4})},
      // A non-contiguous view is written as its values.
      {"transposed", torch::arange(12, torch::kFloat32).reshape({3, 4}).t()},
  };
  const std::string path = TempPath("round_trip.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}, {"k", "v"}}).ok());

  absl::StatusOr<SafetensorsFile> file = ReadSafetensorsFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata, (SafetensorsMetadata{{"format", "pt"}, {"k", "v"}}));
  ASSERT_EQ(file->tensors.size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    const torch::Tensor& got = file->tensors.at(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type());
    EXPECT_EQ(got.sizes(), expected.sizes());
    EXPECT_TRUE(got.device().is_cpu());
    EXPECT_TRUE(torch::equal(got, expected));
  }
  absl::StatusOr<TensorMap> plain = ReadSafetensors(path);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->size(), tensors.size());
}

TEST(SafetensorsTest, WritesHfLayout) {
  const std::string path = TempPath("layout.safetensors");
  ASSERT_TRUE(
      WriteSafetensors(path, {{"b", torch::ones({3})}, {"a", torch::zeros({2}, torch::kFloat16)}})
          .ok());
  const std::string bytes = ReadAll(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_size;
  std::memcpy(&header_size, bytes.data(), 8);
  EXPECT_EQ(header_size % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + header_size + 2 * 2 + 3 * 4);
  const std::string header = bytes.substr(8, header_size);
  const nlohmann::json json = nlohmann::json::parse(header);
  // Sorted by name: "a" (4 bytes of F16) then "b" (12 bytes of F32).
  EXPECT_EQ(json["a"]["dtype"], "F16");
  EXPECT_EQ(json["a"]["data_offsets"], nlohmann::json({0, 4}));
  EXPECT_EQ(json["b"]["dtype"], "F32");
  EXPECT_EQ(json["b"]["shape"], nlohmann::json({3}));
  EXPECT_EQ(json["b"]["data_offsets"], nlohmann::json({4, 16}));
  EXPECT_FALSE(json.contains("__metadata__"));
}

TEST(SafetensorsTest, RejectsUnwritableInput) {
  EXPECT_EQ(WriteSafetensors(TempPath("bad.safetensors"),
                             {{"c", torch::zeros({2}, torch::kComplexFloat)}})
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(TempPath("bad.safetensors"), {{"u", torch::Tensor()}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      WriteSafetensors(TempPath("bad.safetensors"), {{"__metadata__", torch::zeros({1})}}).code(),
      absl::StatusCode::kInvalidArgument);
  const absl::Status no_dir =
      WriteSafetensors(TempPath("no_such_dir/x.safetensors"), {{"a", torch::zeros({1})}});
  EXPECT_EQ(no_dir.code(), absl::StatusCode::kNotFound);
  struct stat st;
  EXPECT_NE(::stat(TempPath("bad.safetensors").c_str(), &st), 0);
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  const std::string path = TempPath("missing.safetensors");
  absl::StatusOr<TensorMap> read = ReadSafetensors(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(read.status().message(), HasSubstr(path));
}

// Each corruption of a good file is a clear error naming the file.
class CorruptSafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    good_path_ = TempPath("good.safetensors");
    ASSERT_TRUE(WriteSafetensors(good_path_, {{"w", torch::ones({2, 3})},
                                              {"x", torch::ones({4}, torch::kBFloat16)}})
                    .ok());
    good_ = ReadAll(good_path_);
    std::memcpy(&header_size_, good_.data(), 8);
    header_ = nlohmann::json::parse(good_.substr(8, header_size_));
    data_ = good_.substr(8 + header_size_);
  }

  // Writes `bytes` to a file and expects reading it to fail with `code` and a
  // message containing the path and `substring`.
  void ExpectError(const std::string& bytes, absl::StatusCode code, const std::string& substring) {
    const std::string path = TempPath("corrupt.safetensors");
    WriteAll(path, bytes);
    absl::StatusOr<TensorMap> read = ReadSafetensors(path);
    ASSERT_FALSE(read.ok());
    EXPECT_EQ(read.status().code(), code) << read.status();
    EXPECT_THAT(read.status().message(), HasSubstr(path));
    EXPECT_THAT(read.status().message(), HasSubstr(substring));
  }

  std::string good_path_;
  std::string good_;
  uint64_t header_size_ = 0;
  nlohmann::json header_;
  std::string data_;
};

TEST_F(CorruptSafetensorsTest, GoodFileReads) {
  EXPECT_TRUE(ReadSafetensors(good_path_).ok());
  EXPECT_TRUE(ReadSafetensors(TempPath("x")).status().code() == absl::StatusCode::kNotFound);
  // Rebuilding the file from its parsed parts gives a readable file too.
  WriteAll(TempPath("rebuilt.safetensors"), MakeFile(header_.dump(), data_));
  EXPECT_TRUE(ReadSafetensors(TempPath("rebuilt.safetensors")).ok());
}

TEST_F(CorruptSafetensorsTest, ShorterThanEightBytes) {
  ExpectError(good_.substr(0, 5), absl::StatusCode::kDataLoss,
              "shorter than the 8-byte header length");
  ExpectError("", absl::StatusCode::kDataLoss, "is 0 bytes");
}

TEST_F(CorruptSafetensorsTest, TruncatedData) {
  ExpectError(good_.substr(0, good_.size() - 3), absl::StatusCode::kDataLoss,
              "outside the data section");
}

TEST_F(CorruptSafetensorsTest, TruncatedHeader) {
  ExpectError(good_.substr(0, 8 + header_size_ / 2), absl::StatusCode::kDataLoss,
              "runs past the end of the file");
}

TEST_F(CorruptSafetensorsTest, AbsurdHeaderLength) {
  std::string bytes = good_;
  const uint64_t huge = uint64_t{1} << 62;
  std::memcpy(bytes.data(), &huge, 8);
  ExpectError(bytes, absl::StatusCode::kDataLoss, "is absurd");
}

TEST_F(CorruptSafetensorsTest, HeaderNotJson) {
  std::string bytes = good_;
  bytes[8] = '#';
  ExpectError(bytes, absl::StatusCode::kDataLoss, "not valid JSON");
}

TEST_F(CorruptSafetensorsTest, HeaderNotObject) {
  ExpectError(MakeFile("[1, 2, 3]", data_), absl::StatusCode::kDataLoss, "not an object");
}

TEST_F(CorruptSafetensorsTest, UnknownDtype) {
  header_["w"]["dtype"] = "F8_E4M3";
  ExpectError(MakeFile(header_.dump(), data_), absl::StatusCode::kInvalidArgument,
              "tensor \"w\" has unsupported dtype \"F8_E4M3\"");
}

TEST_F(CorruptSafetensorsTest, MissingFields) {
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    SCOPED_TRACE(field);
    nlohmann::json header = header_;
    header["x"].erase(field);
    ExpectError(MakeFile(header.dump(), data_), absl::StatusCode::kDataLoss,
                std::string("tensor \"x\" has no ") +
                    (field == std::string("dtype") ? "string " : "") + "\"" + field + "\"");
  }
}

TEST_F(CorruptSafetensorsTest, EntryNotObject) {
  header_["w"] = 7;
  ExpectError(MakeFile(header_.dump(), data_), absl::StatusCode::kDataLoss,
              "tensor \"w\" is not a JSON object");
}

TEST_F(CorruptSafetensorsTest, NegativeShape) {
  header_["w"]["shape"] = {-2, 3};
  ExpectError(MakeFile(header_.dump(), data_), absl::StatusCode::kDataLoss,
              "\"shape\" array of non-negative integers");
}

TEST_F(CorruptSafetensorsTest, OffsetsOutOfRange) {
  header_["x"]["data_offsets"] = {24, 1000};
  ExpectError(MakeFile(header_.dump(), data_), absl::StatusCode::kDataLoss,
              "tensor \"x\" has data_offsets [24, 1000] outside the data "
              "section of 32 bytes");
}

TEST_F(CorruptSafetensorsTest, OverlappingTensors) {
  header_["x"]["data_offsets"] = {16, 24};  // inside w's [0, 24)
  ExpectError(MakeFile(header_.dump(), data_), absl::StatusCode::kDataLoss, "overlap");
}

TEST_F(CorruptSafetensorsTest, OffsetsEndBeforeBegin) {
  header_["x"]["data_offsets"] = {24, 16};
  ExpectError(MakeFile(header_.dump(), data_), absl::StatusCode::kDataLoss,
              "data_offsets [24, 16]");
}

TEST_F(CorruptSafetensorsTest, ShapeBytesMismatch) {
  header_["w"]["shape"] = {2, 4};
  ExpectError(MakeFile(header_.dump(), data_), absl::StatusCode::kDataLoss,
              "tensor \"w\" has shape [2, 4] of F32 needing 32 bytes, but "
              "data_offsets span 24");
}

TEST_F(CorruptSafetensorsTest, ShapeOverflow) {
  header_["w"]["shape"] = {uint64_t{1} << 40, uint64_t{1} << 40};
  ExpectError(MakeFile(header_.dump(), data_), absl::StatusCode::kDataLoss, "size overflows");
}

TEST_F(CorruptSafetensorsTest, NonStringMetadata) {
  header_["__metadata__"] = {{"format", 3}};
  ExpectError(MakeFile(header_.dump(), data_), absl::StatusCode::kDataLoss,
              "__metadata__ value for \"format\" is not a string");
}

// 240 MB read at a few hundred MB/s at least (a load of GPT-2 124M's 500 MB
// takes about a second), not element by element.
TEST(SafetensorsTest, LargeFileRoundTrips) {
  // 240 MB, the size class of GPT-2's checkpoints: every tensor comes back.
  TensorMap tensors;
  for (int i = 0; i < 10; ++i) {
    tensors.emplace("t" + std::to_string(i), torch::full({1 << 20, 6}, static_cast<float>(i)));
  }
  const std::string path = TempPath("large.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  absl::StatusOr<TensorMap> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), tensors.size());
  for (const auto& [name, tensor] : tensors) {
    EXPECT_TRUE(torch::equal(read->at(name), tensor)) << name;
  }
  std::remove(path.c_str());
}

}  // namespace safetensors_test
}  // namespace nanoserve
