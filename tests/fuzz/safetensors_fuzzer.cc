// Fuzzes the safetensors reader (engine/safetensors.h): the input is a whole
// file. Any input gives a status, never a crash or an exception; a file that
// reads back OK holds contiguous CPU tensors, and writing them out with
// WriteSafetensors and reading that again gives the same names, dtypes,
// shapes, bytes and metadata.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <torch/types.h>

#include "engine/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

namespace nanoserve {
namespace {

// The input lives in a memfd: ReadSafetensorsFile takes a path, and
// /proc/self/fd/N is one without touching the disk.
class InputFile {
 public:
  InputFile() : fd_(memfd_create("safetensors_fuzzer", MFD_CLOEXEC)) {
    if (fd_ < 0) std::perror("memfd_create"), std::exit(1);
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  const std::string& Write(const uint8_t* data, size_t size) {
    FUZZ_CHECK(ftruncate(fd_, 0) == 0);
    FUZZ_CHECK(size == 0 || pwrite(fd_, data, size, 0) == static_cast<ssize_t>(size));
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

// Where the round trip is written: a fresh directory under $TMPDIR or /tmp.
std::string RoundTripPath() {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/safetensors_fuzzer.XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) std::perror("mkdtemp"), std::exit(1);
  return dir + "/round_trip.safetensors";
}

bool SameBytes(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0);
}

}  // namespace
}  // namespace nanoserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using nanoserve::SafetensorsFile;
  static nanoserve::InputFile input;
  static const std::string round_trip = nanoserve::RoundTripPath();

  absl::StatusOr<SafetensorsFile> file = nanoserve::ReadSafetensorsFile(input.Write(data, size));
  if (!file.ok()) return 0;
  for (const auto& [name, tensor] : file->tensors) {
    FUZZ_CHECK(tensor.device().is_cpu() && tensor.is_contiguous());
  }
  // Names WriteSafetensors refuses (empty) cannot round-trip; all else must.
  if (file->tensors.count("") != 0) return 0;
  FUZZ_CHECK(nanoserve::WriteSafetensors(round_trip, file->tensors, file->metadata).ok());
  absl::StatusOr<SafetensorsFile> again = nanoserve::ReadSafetensorsFile(round_trip);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->metadata == file->metadata);
  FUZZ_CHECK(again->tensors.size() == file->tensors.size());
  for (const auto& [name, tensor] : file->tensors) {
    auto it = again->tensors.find(name);
    FUZZ_CHECK(it != again->tensors.end() && nanoserve::SameBytes(tensor, it->second));
  }
  return 0;
}
