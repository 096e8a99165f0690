// Reading and writing HF's .safetensors format.
//
// Layout: an 8-byte little-endian header length N, then N bytes of JSON
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}, ...,
//    "__metadata__": {"<key>": "<string>", ...}}
// then the data section; [b, e) are byte offsets into the data section and
// e - b == product(shape) * itemsize. Tensors are little-endian, row-major.
//
// Both functions are thread-compatible: they share no state, but two calls
// writing the same path race.
#ifndef NANOSERVE_ENGINE_SAFETENSORS_H_
#define NANOSERVE_ENGINE_SAFETENSORS_H_

#include <map>
#include <string>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nanoserve {

using TensorMap = std::map<std::string, torch::Tensor>;
using SafetensorsMetadata = std::map<std::string, std::string>;

// The dtypes both directions support, by safetensors name: F64, F32, F16,
// BF16, I64, I32, I16, I8, U8, BOOL.

// A whole file: its tensors and the string map under "__metadata__".
struct SafetensorsFile {
  TensorMap tensors;
  SafetensorsMetadata metadata;
};

// Reads the .safetensors file at `path` with one mmap and one copy per
// tensor. Tensors are contiguous, on the CPU, in the stored dtype, each with
// its own storage. Overlapping or unused byte ranges are accepted.
// Errors, each naming `path` and the problem:
//   NOT_FOUND         the file does not exist;
//   DATA_LOSS         shorter than 8 bytes, a header length past the end of
//                     the file or over 100 MB, a header that is not a JSON
//                     object, an entry without a valid dtype/shape/
//                     data_offsets, offsets outside the data section or with
//                     end < begin, a byte count != product(shape) * itemsize,
//                     non-string metadata;
//   INVALID_ARGUMENT  a dtype this reader does not support (e.g. F8_E4M3);
//   others            from the OS (permission denied, ...).
absl::StatusOr<SafetensorsFile> ReadSafetensorsFile(const std::string& path);

// ReadSafetensorsFile without the metadata.
absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path);

// Writes `tensors` (any device; contiguous CPU copies are made as needed) and
// `metadata` to `path` in the layout HF writes: header padded with spaces to a
// multiple of 8 bytes, tensors sorted by name with data in that order. The
// file is written beside `path` and renamed into place, so readers never see
// a partial file. INVALID_ARGUMENT for an undefined tensor, an unsupported
// dtype, or an empty or "__metadata__" name; OS errors (missing directory,
// ...) as their canonical codes.
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const SafetensorsMetadata& metadata = {});

// An uninitialised contiguous CPU tensor for a caller about to write every
// byte of it (a load, a random fill). The 2 MB-aligned interior of a large one
// is advised onto transparent huge pages: on Linux, first-touch page faults
// otherwise cost more than the fill itself.
torch::Tensor EmptyCpuTensorToFill(c10::IntArrayRef shape, torch::ScalarType dtype);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_SAFETENSORS_H_
