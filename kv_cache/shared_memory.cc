#include "kv_cache/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <utility>

#include <torch/cuda.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#ifdef NANOSERVE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace nanoserve {
namespace {

// The start of a shared-memory segment; the data follows at kHeaderBytes.
constexpr char kPoolMagic[8] = {'N', 'S', 'K', 'V', 'P', 'O', 'O', 'L'};
constexpr int64_t kHeaderBytes = 4096;
struct SegmentHeader {
  char magic[8];
  uint64_t epoch;
  int64_t bytes;
};

int64_t NumBytes(const std::vector<int64_t>& sizes, torch::ScalarType dtype) {
  int64_t n = c10::elementSize(dtype);
  for (int64_t s : sizes) n *= s;
  return n;
}

std::string Errno(absl::string_view what) { return absl::StrCat(what, ": ", std::strerror(errno)); }

absl::StatusOr<ExportedTensor> AllocateShm(std::vector<int64_t> sizes, torch::ScalarType dtype,
                                           uint64_t epoch) {
  const int64_t bytes = NumBytes(sizes, dtype);
  const int64_t total = kHeaderBytes + bytes;
  // One object per allocation: a store exports its pool and its page
  // index under one epoch.
  static std::atomic<int> allocations{0};
  const std::string name =
      absl::StrFormat("/nanoserve-kv-%d-%016x-%d", getpid(), epoch, allocations.fetch_add(1));
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) return absl::UnavailableError(Errno(absl::StrCat("shm_open ", name)));
  auto fail = [&](absl::string_view what) {
    const std::string message = Errno(what);
    close(fd);
    shm_unlink(name.c_str());
    return absl::UnavailableError(message);
  };
  if (ftruncate(fd, total) != 0) return fail(absl::StrCat("ftruncate ", name));
  // Commit the memory now: a tmpfs too small for it would otherwise kill
  // the process with SIGBUS at the first touch of a page past its room.
  if (const int err = posix_fallocate(fd, 0, total); err != 0) {
    errno = err;
    return fail(absl::StrCat("no room in /dev/shm for ", total, " bytes (", name, ")"));
  }
  void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (base == MAP_FAILED) return fail(absl::StrCat("mmap ", name));
  close(fd);
  SegmentHeader header{};
  std::memcpy(header.magic, kPoolMagic, sizeof(kPoolMagic));
  header.epoch = epoch;
  header.bytes = bytes;
  std::memcpy(base, &header, sizeof(header));
  ExportedTensor out;
  out.tensor = torch::from_blob(
      static_cast<char*>(base) + kHeaderBytes, sizes,
      [base, total, name](void*) {
        munmap(base, total);
        shm_unlink(name.c_str());
      },
      torch::TensorOptions().dtype(dtype));  // a new segment reads as zeros
  out.segment.transport = KvTransport::kShm;
  out.segment.shm_name = name;
  out.segment.offset_bytes = kHeaderBytes;
  out.segment.bytes = bytes;
  return out;
}

absl::StatusOr<torch::Tensor> MapShm(const SharedSegment& segment, std::vector<int64_t> sizes,
                                     torch::ScalarType dtype, uint64_t epoch) {
  const int64_t bytes = NumBytes(sizes, dtype);
  if (segment.shm_name.empty() || segment.shm_name[0] != '/' ||
      segment.shm_name.find('/', 1) != std::string::npos) {
    return absl::FailedPreconditionError(
        absl::StrCat("shared memory name '", segment.shm_name, "' is not a POSIX object name"));
  }
  if (segment.bytes != bytes || segment.offset_bytes != kHeaderBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("shared segment of ", segment.bytes, " bytes at ", segment.offset_bytes,
                     " is not the ", bytes, " bytes at ", kHeaderBytes, " of the pool's layout"));
  }
  const int fd = shm_open(segment.shm_name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        Errno(absl::StrCat("cannot open shared memory ", segment.shm_name)));
  }
  struct stat st {};
  const int64_t total = kHeaderBytes + bytes;
  if (fstat(fd, &st) != 0 || st.st_size != total) {
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("shared memory ", segment.shm_name, " is not ", total, " bytes long"));
  }
  // Populated: a reader would otherwise fault on the first touch of every
  // 4 KiB of the pages it copies (tens of ms for a long prompt).
  void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  close(fd);
  if (base == MAP_FAILED) {
    return absl::FailedPreconditionError(Errno(absl::StrCat("mmap ", segment.shm_name)));
  }
  SegmentHeader header{};
  std::memcpy(&header, base, sizeof(header));
  if (std::memcmp(header.magic, kPoolMagic, sizeof(kPoolMagic)) != 0 || header.epoch != epoch ||
      header.bytes != bytes) {
    munmap(base, total);
    return absl::FailedPreconditionError(absl::StrCat(
        "shared memory ", segment.shm_name, " is not the pool of epoch ", epoch, " (stale?)"));
  }
  return torch::from_blob(
      static_cast<char*>(base) + kHeaderBytes, sizes, [base, total](void*) { munmap(base, total); },
      torch::TensorOptions().dtype(dtype));
}

#ifdef NANOSERVE_WITH_CUDA
std::string CudaError(absl::string_view what, cudaError_t error) {
  cudaGetLastError();  // clear it, so that it does not surface in later calls
  return absl::StrCat(what, ": ", cudaGetErrorString(error));
}

// Makes `index` the current device until the scope ends.
class CurrentDevice {
 public:
  explicit CurrentDevice(int index) {
    cudaGetDevice(&previous_);
    cudaSetDevice(index);
  }
  ~CurrentDevice() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

absl::StatusOr<ExportedTensor> AllocateCuda(std::vector<int64_t> sizes, torch::ScalarType dtype,
                                            torch::Device device) {
  const int64_t bytes = NumBytes(sizes, dtype);
  const int index = device.has_index() ? device.index() : 0;
  CurrentDevice current(index);
  void* data = nullptr;
  if (cudaError_t e = cudaMalloc(&data, bytes); e != cudaSuccess) {
    return absl::UnavailableError(CudaError(absl::StrCat("cudaMalloc of ", bytes, " bytes"), e));
  }
  cudaIpcMemHandle_t handle;
  cudaDeviceProp prop;
  cudaError_t e = cudaMemset(data, 0, bytes);
  if (e == cudaSuccess) e = cudaIpcGetMemHandle(&handle, data);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, index);
  if (e != cudaSuccess) {
    cudaFree(data);
    return absl::UnavailableError(CudaError("exporting the pool", e));
  }
  ExportedTensor out;
  out.tensor = torch::from_blob(
      data, sizes, [](void* p) { cudaFree(p); },
      torch::TensorOptions().dtype(dtype).device(torch::kCUDA, index));
  out.segment.transport = KvTransport::kCudaIpc;
  out.segment.cuda_ipc_handle.assign(reinterpret_cast<const char*>(&handle), sizeof(handle));
  out.segment.device_uuid.assign(reinterpret_cast<const char*>(&prop.uuid), sizeof(prop.uuid));
  out.segment.bytes = bytes;
  return out;
}

absl::StatusOr<torch::Tensor> MapCuda(const SharedSegment& segment, std::vector<int64_t> sizes,
                                      torch::ScalarType dtype, torch::Device device) {
  const int64_t bytes = NumBytes(sizes, dtype);
  if (!device.is_cuda()) {
    return absl::FailedPreconditionError(
        "the store's pool is on a GPU and this process runs on the CPU");
  }
  cudaIpcMemHandle_t handle;
  if (segment.cuda_ipc_handle.size() != sizeof(handle) || segment.bytes != bytes ||
      segment.offset_bytes != 0) {
    return absl::FailedPreconditionError("malformed CUDA IPC export of the pool");
  }
  std::memcpy(&handle, segment.cuda_ipc_handle.data(), sizeof(handle));
  const int index = device.has_index() ? device.index() : 0;
  CurrentDevice current(index);
  void* data = nullptr;
  // Lazy peer access: the pool may be on another GPU of this host, read
  // and written over NVLink by this device's kernels.
  if (cudaError_t e = cudaIpcOpenMemHandle(&data, handle, cudaIpcMemLazyEnablePeerAccess);
      e != cudaSuccess) {
    return absl::FailedPreconditionError(CudaError("cudaIpcOpenMemHandle of the pool", e));
  }
  return torch::from_blob(
      data, sizes, [](void* p) { cudaIpcCloseMemHandle(p); },
      torch::TensorOptions().dtype(dtype).device(torch::kCUDA, index));
}
#endif  // NANOSERVE_WITH_CUDA

}  // namespace

absl::string_view KvTransportName(KvTransport transport) {
  switch (transport) {
    case KvTransport::kBytes:
      return "bytes";
    case KvTransport::kShm:
      return "shm";
    case KvTransport::kCudaIpc:
      return "cuda_ipc";
  }
  return "unknown";
}

absl::StatusOr<ExportedTensor> AllocateExported(std::vector<int64_t> sizes, torch::ScalarType dtype,
                                                torch::Device device, uint64_t epoch) {
  if (device.is_cpu()) return AllocateShm(std::move(sizes), dtype, epoch);
#ifdef NANOSERVE_WITH_CUDA
  if (device.is_cuda()) return AllocateCuda(std::move(sizes), dtype, device);
#endif
  return absl::UnavailableError(
      absl::StrCat("memory on ", device.str(), " cannot be exported by this build"));
}

absl::StatusOr<torch::Tensor> MapExported(const SharedSegment& segment, std::vector<int64_t> sizes,
                                          torch::ScalarType dtype, torch::Device device,
                                          uint64_t epoch) {
  switch (segment.transport) {
    case KvTransport::kShm:
      return MapShm(segment, std::move(sizes), dtype, epoch);
    case KvTransport::kCudaIpc:
#ifdef NANOSERVE_WITH_CUDA
      return MapCuda(segment, std::move(sizes), dtype, device);
#else
      (void)device;
      return absl::FailedPreconditionError(
          "the store's pool is on a GPU and this build has no CUDA");
#endif
    case KvTransport::kBytes:
      break;
  }
  return absl::FailedPreconditionError("the store exports no pool");
}

std::string HostId() {
  std::ifstream boot_id("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (boot_id && std::getline(boot_id, id) && !id.empty()) {
    return std::string(absl::StripAsciiWhitespace(id));
  }
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

uint64_t NewEpoch() {
  uint64_t epoch = 0;
  while (epoch == 0) {
    if (getrandom(&epoch, sizeof(epoch), 0) != sizeof(epoch)) epoch = 0;
  }
  return epoch;
}

void WaitForDevice(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

torch::Tensor HostToDevice(const torch::Tensor& host, torch::Device device) {
  if (!host.is_cpu() || !device.is_cuda()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

}  // namespace nanoserve
