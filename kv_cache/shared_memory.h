// Memory that another process on the same host can map: where the KV store
// service's page pool lives, so that prefill and decode read and write its
// pages in place and only page ids cross gRPC (docs/services.md, "The KV
// data plane").
//
// One design, two media:
//   * a CPU pool lives in a POSIX shared-memory object (shm_open, mode
//     0600: peers of the same user; /dev/shm must be shared between
//     containers), which peers mmap;
//   * a CUDA pool lives in device memory from cudaMalloc (not the caching
//     allocator, whose blocks cannot be exported alone), which peers open
//     with cudaIpcOpenMemHandle, on the same GPU or a peer GPU over NVLink.
// Either way the exporter's tensor owns the memory (the segment is
// unlinked, the device memory freed, when its storage is freed), and a
// mapping's tensor unmaps when its storage is freed.
//
// A shared-memory segment starts with a small header (a magic and the
// exporter's epoch) so that a mapping of the wrong or a stale segment is
// refused instead of read.
//
// Thread safety: the functions are thread-safe.
#ifndef NANOSERVE_KV_CACHE_SHARED_MEMORY_H_
#define NANOSERVE_KV_CACHE_SHARED_MEMORY_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

// How pages cross between a store and a peer.
enum class KvTransport {
  kBytes,    // gRPC streams of page bytes (any peer, any host)
  kShm,      // page ids into a mapped shared-memory pool (CPU, same host)
  kCudaIpc,  // page ids into a device pool mapped over CUDA IPC (same host)
};
absl::string_view KvTransportName(KvTransport transport);  // "bytes", "shm", "cuda_ipc"

// How to map an exported segment. transport is kBytes when nothing is
// exported.
struct SharedSegment {
  KvTransport transport = KvTransport::kBytes;
  std::string shm_name;         // kShm: the POSIX object's name ("/...")
  std::string cuda_ipc_handle;  // kCudaIpc: the cudaIpcMemHandle_t's bytes
  std::string device_uuid;      // kCudaIpc: the exporter's GPU (cudaUUID_t)
  int64_t offset_bytes = 0;     // where the data starts in the segment
  int64_t bytes = 0;            // of data
};

struct ExportedTensor {
  torch::Tensor tensor;  // `sizes` of `dtype`, contiguous, zeros
  SharedSegment segment;
};

// A zeroed tensor over new exportable memory on `device`. `epoch` is written
// into a shared-memory segment's header. UNAVAILABLE if the memory cannot be
// had (no room in /dev/shm, CUDA out of memory, a build without CUDA).
absl::StatusOr<ExportedTensor> AllocateExported(std::vector<int64_t> sizes, torch::ScalarType dtype,
                                                torch::Device device, uint64_t epoch);

// Maps a peer's segment as a tensor of `sizes` / `dtype`: on the CPU for
// kShm; on `device` (a CUDA device of this process) for kCudaIpc. Refuses
// (FAILED_PRECONDITION, with the reason) a segment it cannot open, whose
// size does not match, or (kShm) whose header is not of `epoch`.
absl::StatusOr<torch::Tensor> MapExported(const SharedSegment& segment, std::vector<int64_t> sizes,
                                          torch::ScalarType dtype, torch::Device device,
                                          uint64_t epoch);

// This host's identity: the kernel's boot id (the same in every container
// of a host), or the host name where there is none.
std::string HostId();

// A new random 64-bit epoch, never 0.
uint64_t NewEpoch();

// Waits until the work this thread queued on `device` is done (nothing on
// the CPU): a writer calls it before it commits pages in place, a reader
// before it releases the lease of pages it copied.
void WaitForDevice(torch::Device device);

// A small tensor (page ids, token ids, positions) on `device`, without
// waiting: from the CPU onto a GPU through pinned memory by a non-blocking
// copy, ordered on the current stream before the kernels that read it
// (LibTorch's caching host allocator keeps the pinned block until the copy
// is done); `host.to(device)` from pageable memory waits for the stream
// first. Otherwise (already on a device, or onto the CPU) `host.to(device)`.
torch::Tensor HostToDevice(const torch::Tensor& host, torch::Device device);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_SHARED_MEMORY_H_
