// The kernel workbench's harness (in the manner of llm.c's dev/cuda): device
// buffers filled from host values rounded to the element type, a check of
// a kernel's output against a reference within a stated tolerance, timing of
// a launch as a CUDA graph node (warm-up, median of replays, inputs rotated
// through copies so that reads come from device memory, not L2), the card's
// copy bandwidth, and the rows of the table scripts/gpu/kernels.sh prints.
//
// Plain CUDA runtime, no LibTorch: each program builds with nvcc alone.
#ifndef NANOSERVE_ENGINE_CUDA_WORKBENCH_WORKBENCH_CUH_
#define NANOSERVE_ENGINE_CUDA_WORKBENCH_WORKBENCH_CUH_

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/cuda/kernels.h"

namespace nanoserve::workbench {

using cuda::DType;

#define WB_CHECK_CUDA(expr)                                              \
  do {                                                                   \
    const cudaError_t wb_err = (expr);                                   \
    if (wb_err != cudaSuccess) {                                         \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                   cudaGetErrorString(wb_err));                          \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)

inline const char* DTypeName(DType t) {
  return t == DType::kFloat ? "fp32" : t == DType::kBFloat16 ? "bf16" : "fp16";
}
inline size_t ElementBytes(DType t) { return t == DType::kFloat ? 4 : 2; }

// bf16 on the host: round to nearest even, as __float2bfloat16.
inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float Bf16ToFloat(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// v rounded to t's precision (fp16 is not used by the workbench).
inline float RoundTo(DType t, float v) {
  return t == DType::kBFloat16 ? Bf16ToFloat(FloatToBf16(v)) : v;
}

// A cudaMalloc'ed block, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) WB_CHECK_CUDA(cudaMalloc(&ptr_, bytes));
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  template <typename U>
  U* as() const {
    return static_cast<U*>(ptr_);
  }
  size_t bytes() const { return bytes_; }
  // Every byte 0xff: NaN in fp32, bf16 and fp16, so an element a kernel
  // does not write fails the check.
  void Poison() const { WB_CHECK_CUDA(cudaMemset(ptr_, 0xff, bytes_)); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Uniform values in [lo, hi).
inline std::vector<float> RandomValues(size_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// `values` rounded to t in place, and uploaded as t.
inline DeviceBuffer Upload(std::vector<float>& values, DType t) {
  DeviceBuffer buf(values.size() * ElementBytes(t));
  if (t == DType::kFloat) {
    WB_CHECK_CUDA(cudaMemcpy(buf.get(), values.data(), buf.bytes(), cudaMemcpyHostToDevice));
    return buf;
  }
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    bits[i] = FloatToBf16(values[i]);
    values[i] = Bf16ToFloat(bits[i]);
  }
  WB_CHECK_CUDA(cudaMemcpy(buf.get(), bits.data(), buf.bytes(), cudaMemcpyHostToDevice));
  return buf;
}

inline std::vector<float> Download(const void* ptr, size_t n, DType t) {
  std::vector<float> out(n);
  if (t == DType::kFloat) {
    WB_CHECK_CUDA(cudaMemcpy(out.data(), ptr, n * 4, cudaMemcpyDeviceToHost));
    return out;
  }
  std::vector<uint16_t> bits(n);
  WB_CHECK_CUDA(cudaMemcpy(bits.data(), ptr, n * 2, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; ++i) out[i] = Bf16ToFloat(bits[i]);
  return out;
}

// Runs f(begin, end) over [0, n) cut into one range per hardware thread.
inline void ParallelFor(size_t n, const std::function<void(size_t, size_t)>& f) {
  const size_t threads = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
  const size_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (size_t b = 0; b < n; b += chunk) pool.emplace_back(f, b, std::min(n, b + chunk));
  for (std::thread& t : pool) t.join();
}

// Elementwise: |out - ref| <= atol + rtol * |ref|; NaN never passes.
struct Tolerance {
  double atol;
  double rtol;
};
struct CheckResult {
  double max_abs = 0;  // max |out - ref|
  double rel_l2 = 0;   // ||out - ref|| / ||ref||
  size_t bad = 0;      // elements outside the tolerance (NaN included)
  bool ok() const { return bad == 0; }
};
inline CheckResult Compare(const std::vector<float>& out, const std::vector<double>& ref,
                           Tolerance tol) {
  CheckResult r;
  double diff2 = 0, ref2 = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double d = std::fabs(out[i] - ref[i]);
    if (!(d <= tol.atol + tol.rtol * std::fabs(ref[i]))) ++r.bad;
    if (std::isnan(d)) {
      r.max_abs = NAN;
    } else if (!std::isnan(r.max_abs)) {
      r.max_abs = std::max(r.max_abs, d);
    }
    diff2 += d * d;
    ref2 += ref[i] * ref[i];
  }
  r.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  return r;
}

// The card, and the two numbers every row is measured against.
struct Device {
  cudaDeviceProp props;
  double copy_gbps = 0;  // device-to-device copy, bytes read + written
  double node_us = 0;    // an empty kernel as a graph node
};

__global__ void EmptyKernel() {}

// Median microseconds per launch of `launch(i)`, i = 0 .. launches - 1,
// captured as one CUDA graph and replayed: 3 replays of warm-up, then
// `replays` timed each with events. The graph's nodes are launched back to
// back, as in the decode step's graph.
inline double TimeGraph(const std::function<void(cudaStream_t, int)>& launch, int launches,
                        int replays = 15) {
  cudaStream_t stream;
  WB_CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  WB_CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < launches; ++i) launch(stream, i);
  WB_CHECK_CUDA(cudaGetLastError());
  WB_CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  WB_CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) WB_CHECK_CUDA(cudaGraphLaunch(exec, stream));
  cudaEvent_t start, stop;
  WB_CHECK_CUDA(cudaEventCreate(&start));
  WB_CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<double> us;
  for (int r = 0; r < replays; ++r) {
    WB_CHECK_CUDA(cudaEventRecord(start, stream));
    WB_CHECK_CUDA(cudaGraphLaunch(exec, stream));
    WB_CHECK_CUDA(cudaEventRecord(stop, stream));
    WB_CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    WB_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    us.push_back(ms * 1000.0 / launches);
  }
  WB_CHECK_CUDA(cudaGetLastError());
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

// Copy bandwidth: median of 10 copies of 256 MiB, bytes read + written.
inline double MeasureCopyGbps() {
  const size_t bytes = size_t{256} << 20;
  DeviceBuffer a(bytes), b(bytes);
  WB_CHECK_CUDA(cudaMemset(a.get(), 1, bytes));
  const double us = TimeGraph(
      [&](cudaStream_t s, int) {
        WB_CHECK_CUDA(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, s));
      },
      1, 10);
  return 2.0 * bytes / us / 1e3;
}

inline Device OpenDevice() {
  Device d;
  WB_CHECK_CUDA(cudaGetDeviceProperties(&d.props, 0));
  d.copy_gbps = MeasureCopyGbps();
  d.node_us = TimeGraph([](cudaStream_t s, int) { EmptyKernel<<<1, 32, 0, s>>>(); }, 100);
  std::printf(
      "# device: %s, %d SMs, L2 %.0f MB; copy bandwidth %.0f GB/s (read + write); "
      "an empty kernel as a graph node: %.2f us\n",
      d.props.name, d.props.multiProcessorCount, d.props.l2CacheSize / 1e6, d.copy_gbps, d.node_us);
  return d;
}

// Copies of an input that together overflow L2 three times, so that each
// launch of a graph (copy i % copies) reads device memory: at most 128.
inline int CopiesToMissL2(const Device& d, size_t bytes) {
  const double l2 = static_cast<double>(d.props.l2CacheSize);
  return static_cast<int>(std::clamp(std::ceil(3 * l2 / std::max<size_t>(bytes, 1)), 1.0, 128.0));
}

// One line of the table: printed as "row<TAB>field<TAB>..." for
// scripts/gpu/kernels.sh to gather.
struct Row {
  std::string kernel, version, shape;
  int batch = 0;
  DType dtype = DType::kFloat;
  CheckResult check;
  bool checked = true;
  double us = 0;
  double bytes = 0;       // the fewest bytes the operation must move
  double cublas_us = -1;  // cuBLAS on the same shape, < 0: none
};
inline void PrintRow(const Device& d, const Row& r) {
  const double floor_us = r.bytes / (d.copy_gbps * 1e3);
  char cublas[32] = "-";
  if (r.cublas_us >= 0) std::snprintf(cublas, sizeof(cublas), "%.2f", r.cublas_us);
  std::printf("row\t%s\t%s\t%s\t%d\t%s\t%.2e\t%s\t%.2f\t%.0f\t%.1f\t%s\n", r.kernel.c_str(),
              r.version.c_str(), r.shape.c_str(), r.batch, DTypeName(r.dtype), r.check.max_abs,
              !r.checked     ? "-"
              : r.check.ok() ? "ok"
                             : "FAIL",
              r.us, r.bytes / (r.us * 1e3), 100.0 * floor_us / r.us, cublas);
  std::printf("#   %s %s %s batch %d %s: rel_l2 %.2e, %zu outside tolerance; floor %.2f us\n",
              r.kernel.c_str(), r.version.c_str(), r.shape.c_str(), r.batch, DTypeName(r.dtype),
              r.check.rel_l2, r.check.bad, floor_us);
  std::fflush(stdout);
}

// Command line: --quick (one shape per family, batch 1 and 8) and
// --filter=TEXT (only rows whose "kernel version shape" contains TEXT).
struct Args {
  bool quick = false;
  std::string filter;
  bool Wants(const std::string& text) const {
    return filter.empty() || text.find(filter) != std::string::npos;
  }
};
inline Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--quick") {
      a.quick = true;
    } else if (s.rfind("--filter=", 0) == 0) {
      a.filter = s.substr(9);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--filter=TEXT]\n", argv[0]);
      std::exit(2);
    }
  }
  return a;
}

}  // namespace nanoserve::workbench

#endif  // NANOSERVE_ENGINE_CUDA_WORKBENCH_WORKBENCH_CUH_
