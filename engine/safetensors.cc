#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/torch_status.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; this code copies it as is");

namespace nanoserve {
namespace {

// HF's reader refuses headers over 100 MB; so do we, before allocating.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
constexpr char kMetadataKey[] = "__metadata__";

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t itemsize;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8},   {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},     {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* DtypeByName(const std::string& name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

const DtypeInfo* DtypeByType(torch::ScalarType type) {
  for (const DtypeInfo& info : kDtypes) {
    if (type == info.type) return &info;
  }
  return nullptr;
}

// A read-only mapping of a whole file; unmaps and closes on destruction.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path) {
    MappedFile file;
    file.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (file.fd_ < 0) {
      const int err = errno;
      return absl::ErrnoToStatus(err, absl::StrCat("cannot open safetensors file ", path));
    }
    struct stat st;
    if (::fstat(file.fd_, &st) != 0) {
      const int err = errno;
      return absl::ErrnoToStatus(err, absl::StrCat("cannot stat ", path));
    }
    if (!S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
    }
    file.size_ = static_cast<uint64_t>(st.st_size);
    if (file.size_ == 0) return file;
    void* data = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, file.fd_, 0);
    if (data == MAP_FAILED) {
      const int err = errno;
      return absl::ErrnoToStatus(err, absl::StrCat("cannot mmap ", path));
    }
    ::madvise(data, file.size_, MADV_SEQUENTIAL);
    file.data_ = static_cast<const char*>(data);
    return file;
  }

  MappedFile(MappedFile&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }

  const char* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  MappedFile() = default;

  int fd_ = -1;
  const char* data_ = nullptr;
  uint64_t size_ = 0;
};

// memcpy into memory just allocated by EmptyCpuTensorToFill, on several
// threads: page faults on the fresh destination cost more than the copy.
void ParallelCopy(void* dst, const char* src, uint64_t size) {
  constexpr int64_t kGrain = int64_t{16} << 20;
  char* out = static_cast<char*>(dst);
  at::parallel_for(0, static_cast<int64_t>(size), kGrain,
                   [&](int64_t chunk_begin, int64_t chunk_end) {
                     std::memcpy(out + chunk_begin, src + chunk_begin, chunk_end - chunk_begin);
                   });
}

// Reads a JSON array of non-negative integers, or returns false.
bool ReadUintArray(const nlohmann::json& json, std::vector<uint64_t>* out) {
  if (!json.is_array()) return false;
  out->clear();
  for (const nlohmann::json& v : json) {
    if (!v.is_number_unsigned()) return false;
    out->push_back(v.get<uint64_t>());
  }
  return true;
}

// Parses one header entry and copies its bytes out of `data` (the data
// section, `data_size` bytes). `where` prefixes every message.
absl::StatusOr<torch::Tensor> ReadEntry(const std::string& where, const nlohmann::json& entry,
                                        const char* data, uint64_t data_size) {
  if (!entry.is_object()) {
    return absl::DataLossError(absl::StrCat(where, " is not a JSON object"));
  }
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return absl::DataLossError(absl::StrCat(where, " has no string \"dtype\""));
  }
  const std::string dtype_name = dtype_it->get<std::string>();
  const DtypeInfo* dtype = DtypeByName(dtype_name);
  if (dtype == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " has unsupported dtype \"", dtype_name, "\""));
  }
  std::vector<uint64_t> shape, offsets;
  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !ReadUintArray(*shape_it, &shape)) {
    return absl::DataLossError(
        absl::StrCat(where, " has no \"shape\" array of non-negative integers"));
  }
  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !ReadUintArray(*offsets_it, &offsets) || offsets.size() != 2) {
    return absl::DataLossError(
        absl::StrCat(where, " has no \"data_offsets\" [begin, end] of non-negative integers"));
  }
  const uint64_t begin = offsets[0], end = offsets[1];
  if (end < begin || end > data_size) {
    return absl::DataLossError(absl::StrCat(where, " has data_offsets [", begin, ", ", end,
                                            "] outside the data section of ", data_size, " bytes"));
  }
  // numel * itemsize, with overflow meaning "more bytes than any file has".
  uint64_t nbytes = static_cast<uint64_t>(dtype->itemsize);
  bool overflow = false;
  std::vector<int64_t> sizes;
  for (uint64_t dim : shape) {
    if (dim > static_cast<uint64_t>(INT64_MAX)) overflow = true;
    overflow |= __builtin_mul_overflow(nbytes, dim, &nbytes);
    sizes.push_back(static_cast<int64_t>(dim));
  }
  if (overflow || nbytes != end - begin) {
    return absl::DataLossError(
        absl::StrCat(where, " has shape [", absl::StrJoin(shape, ", "), "] of ", dtype_name,
                     (overflow ? " (size overflows)" : ""), " needing ",
                     overflow ? std::string("too many") : absl::StrCat(nbytes),
                     " bytes, but data_offsets span ", end - begin));
  }
  torch::Tensor tensor = EmptyCpuTensorToFill(sizes, dtype->type);
  if (nbytes > 0) ParallelCopy(tensor.data_ptr(), data + begin, nbytes);
  return tensor;
}

absl::StatusOr<SafetensorsFile> ReadMapped(const std::string& path, const MappedFile& file) {
  if (file.size() < 8) {
    return absl::DataLossError(absl::StrCat(path, ": file is ", file.size(),
                                            " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_size;
  std::memcpy(&header_size, file.data(), 8);
  if (header_size > kMaxHeaderBytes) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_size,
                                            " is absurd (limit ", kMaxHeaderBytes, " bytes)"));
  }
  if (header_size > file.size() - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_size,
                                            " runs past the end of the file (", file.size(),
                                            " bytes)"));
  }
  const char* header_begin = file.data() + 8;
  const nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_size,
                                                      /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    return absl::DataLossError(absl::StrCat(path, ": header is not valid JSON"));
  }
  if (!header.is_object()) {
    return absl::DataLossError(
        absl::StrCat(path, ": header is a JSON ", header.type_name(), ", not an object"));
  }
  const char* data = header_begin + header_size;
  const uint64_t data_size = file.size() - 8 - header_size;

  SafetensorsFile result;
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> spans;  // [begin, end), name
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      if (entry.is_null()) continue;
      if (!entry.is_object()) {
        return absl::DataLossError(absl::StrCat(path, ": __metadata__ is not a JSON object"));
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return absl::DataLossError(
              absl::StrCat(path, ": __metadata__ value for \"", key, "\" is not a string"));
        }
        result.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    absl::StatusOr<torch::Tensor> tensor =
        ReadEntry(absl::StrCat(path, ": tensor \"", name, "\""), entry, data, data_size);
    if (!tensor.ok()) return tensor.status();
    result.tensors.emplace(name, *std::move(tensor));
    const nlohmann::json& offsets = entry["data_offsets"];  // checked by ReadEntry
    spans.push_back({offsets[0].get<uint64_t>(), offsets[1].get<uint64_t>(), name});
  }
  // Each byte of the data belongs to one tensor at most.
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    const auto& [begin, end, name] = spans[i];
    const auto& [previous_begin, previous_end, previous_name] = spans[i - 1];
    if (begin < previous_end && begin < end) {
      return absl::DataLossError(absl::StrCat(path, ": tensors \"", previous_name, "\" and \"",
                                              name, "\" overlap in the file"));
    }
  }
  return result;
}

// fwrite that reports failure as a status naming `path`.
absl::Status WriteBytes(std::FILE* out, const void* bytes, size_t size, const std::string& path) {
  if (size > 0 && std::fwrite(bytes, 1, size, out) != size) {
    const int err = errno;
    return absl::ErrnoToStatus(err, absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& header,
                       const TensorMap& tensors) {
  std::FILE* out = std::fopen(path.c_str(), "wb");
  if (out == nullptr) {
    const int err = errno;
    return absl::ErrnoToStatus(err, absl::StrCat("cannot create ", path));
  }
  const uint64_t header_size = header.size();
  absl::Status status = WriteBytes(out, &header_size, 8, path);
  if (status.ok()) status = WriteBytes(out, header.data(), header.size(), path);
  for (const auto& [name, tensor] : tensors) {
    if (!status.ok()) break;
    const torch::Tensor cpu = tensor.to(torch::kCPU).contiguous();
    status = WriteBytes(out, cpu.data_ptr(), cpu.nbytes(), path);
  }
  if (std::fclose(out) != 0 && status.ok()) {
    const int err = errno;
    status = absl::ErrnoToStatus(err, absl::StrCat("cannot write ", path));
  }
  return status;
}

}  // namespace

torch::Tensor EmptyCpuTensorToFill(c10::IntArrayRef shape, torch::ScalarType dtype) {
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  torch::Tensor tensor = torch::empty(shape, torch::dtype(dtype));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(tensor.data_ptr());
  const uintptr_t end = begin + tensor.nbytes();
  const uintptr_t aligned_begin = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t aligned_end = end & ~(kHugePage - 1);
  if (aligned_end > aligned_begin) {
    // A hint: where THP is off or the range is not anonymous memory, the call
    // fails and nothing changes.
    ::madvise(reinterpret_cast<void*>(aligned_begin), aligned_end - aligned_begin, MADV_HUGEPAGE);
  }
  return tensor;
}

absl::StatusOr<SafetensorsFile> ReadSafetensorsFile(const std::string& path) {
  absl::StatusOr<MappedFile> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return TorchResult(path, [&] { return ReadMapped(path, *file); });
}

absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path) {
  absl::StatusOr<SafetensorsFile> file = ReadSafetensorsFile(path);
  if (!file.ok()) return file.status();
  return std::move(file->tensors);
}

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const SafetensorsMetadata& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == kMetadataKey) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write ", path, ": invalid tensor name \"", name, "\""));
    }
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write ", path, ": tensor \"", name, "\" is undefined"));
    }
    const DtypeInfo* dtype = DtypeByType(tensor.scalar_type());
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot write ", path, ": tensor \"", name, "\" has dtype ",
          c10::toString(tensor.scalar_type()), " which safetensors does not support here"));
    }
    const uint64_t nbytes = tensor.numel() * dtype->itemsize;
    header[name] = {{"dtype", dtype->name},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  const std::string temp_path = absl::StrCat(path, ".tmp.", ::getpid());
  absl::Status status = TorchResult(absl::StrCat("cannot write ", path),
                                    [&] { return WriteFile(temp_path, header_text, tensors); });
  if (status.ok() && std::rename(temp_path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    status = absl::ErrnoToStatus(err, absl::StrCat("cannot rename ", temp_path, " to ", path));
  }
  if (!status.ok()) std::remove(temp_path.c_str());
  return status;
}

}  // namespace nanoserve
