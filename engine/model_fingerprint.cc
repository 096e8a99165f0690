#include "engine/model_fingerprint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/config.h"

namespace nanoserve {
namespace {

constexpr int64_t kHeadBytes = int64_t{1} << 20;
constexpr int64_t kSampleBytes = int64_t{64} << 10;
constexpr int kSamples = 64;

// 64-bit FNV-1a, fed in pieces.
class Fnv1a {
 public:
  void Add(const void* data, size_t n) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) hash_ = (hash_ ^ p[i]) * 0x100000001b3ull;
  }
  uint64_t hash() const { return hash_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ull;
};

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  const int err = errno;
  const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  return err == ENOENT ? absl::NotFoundError(message) : absl::InternalError(message);
}

// Hashes bytes [offset, offset + n) of `fd`, or to its end.
absl::Status HashRange(int fd, const std::string& path, int64_t offset, int64_t n, Fnv1a* fnv) {
  std::vector<char> buffer(static_cast<size_t>(n));
  int64_t got = 0;
  while (got < n) {
    const ssize_t done = pread(fd, buffer.data() + got, static_cast<size_t>(n - got), offset + got);
    if (done < 0 && errno == EINTR) continue;
    if (done < 0) return ErrnoError("reading", path);
    if (done == 0) break;
    got += done;
  }
  fnv->Add(buffer.data(), static_cast<size_t>(got));
  return absl::OkStatus();
}

absl::Status HashFile(const std::string& path, bool sampled, Fnv1a* fnv, int64_t* size) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("opening", path);
  struct stat st;
  absl::Status status = fstat(fd, &st) == 0 ? absl::OkStatus() : ErrnoError("reading", path);
  *size = status.ok() ? static_cast<int64_t>(st.st_size) : 0;
  fnv->Add(size, sizeof(*size));
  if (status.ok() && (!sampled || *size <= kHeadBytes + kSamples * kSampleBytes)) {
    status = HashRange(fd, path, 0, *size, fnv);
  } else if (status.ok()) {
    status = HashRange(fd, path, 0, kHeadBytes, fnv);
    const int64_t stride = (*size - kHeadBytes) / kSamples;
    for (int i = 0; i < kSamples && status.ok(); ++i) {
      status = HashRange(fd, path, kHeadBytes + i * stride, kSampleBytes, fnv);
    }
  }
  close(fd);
  return status;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

absl::StatusOr<std::string> ModelFingerprint(const std::string& spec, uint64_t seed) {
  if (absl::StartsWith(spec, "random:")) {
    if (absl::Status s = Gpt2Preset(spec.substr(7)).status(); !s.ok()) return s;
    return absl::StrCat(spec, " seed ", seed);
  }
  // As LoadCheckpoint finds them: a directory's model.safetensors and
  // config.json, or a .safetensors file and the config.json beside it.
  const bool dir = IsDirectory(spec);
  const std::string weights = dir ? spec + "/model.safetensors" : spec;
  const size_t slash = spec.rfind('/');
  const std::string config_dir = dir                          ? spec
                                 : slash == std::string::npos ? "."
                                                              : spec.substr(0, slash);
  Fnv1a fnv;
  int64_t config_bytes = 0, weight_bytes = 0;
  absl::Status config =
      HashFile(config_dir + "/config.json", /*sampled=*/false, &fnv, &config_bytes);
  if (!config.ok() && config.code() != absl::StatusCode::kNotFound) return config;  // optional
  if (absl::Status s = HashFile(weights, /*sampled=*/true, &fnv, &weight_bytes); !s.ok()) return s;
  return absl::StrFormat("weights:%016x %d bytes", fnv.hash(), weight_bytes);
}

}  // namespace nanoserve
