// Workbench: the decode step's residual add + LayerNorm (kernels.h,
// AddLayerNorm) on GPT-2's widths (768, 1600) at batch 1, 8 and 64:
//   x[r] += delta[r] (rounded to the dtype);  out[r] = LayerNorm(x[r]) * w + b
// each version checked against an fp64 CPU reference (x and out) and timed as
// a graph node. Its bytes are few (a few KB at batch 1): the time is the
// node's latency, so compare it with the empty kernel's row, not the floor.
//
// Versions:
//   naive     one thread per row, three passes over the row.
//   engine    the engine's LaunchAddLayerNorm: one 256-thread block per row,
//             2-byte loads, two block reductions (__syncthreads).
//   warp_vec  one warp per row (4 rows a block), 16-byte loads, the row held
//             in registers, two-pass variance by warp shuffles: no barrier.
#include "engine/cuda/layer_norm.cu"  // the engine's kernel: version engine

#include "engine/cuda/workbench/workbench.cuh"

namespace nanoserve::workbench {
namespace {

using cuda::AddLayerNormParams;
using cuda::Packed16;

// ---------------------------------------------------------------- naive

template <typename T>
__global__ void NaiveKernel(AddLayerNormParams p) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= p.rows) return;
  T* x = static_cast<T*>(p.x) + static_cast<int64_t>(r) * p.cols;
  const T* delta = static_cast<const T*>(p.delta) + static_cast<int64_t>(r) * p.cols;
  float sum = 0.0f;
  for (int c = 0; c < p.cols; ++c) {
    x[c] = cuda::FromFloat<T>(cuda::ToFloat(x[c]) + cuda::ToFloat(delta[c]));
    sum += cuda::ToFloat(x[c]);
  }
  const float mean = sum / p.cols;
  float sq = 0.0f;
  for (int c = 0; c < p.cols; ++c) {
    const float d = cuda::ToFloat(x[c]) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(sq / p.cols + p.eps);
  const T* w = static_cast<const T*>(p.weight);
  const T* b = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(r) * p.cols;
  for (int c = 0; c < p.cols; ++c) {
    out[c] = cuda::FromFloat<T>((cuda::ToFloat(x[c]) - mean) * rstd * cuda::ToFloat(w[c]) +
                                cuda::ToFloat(b[c]));
  }
}

// ---------------------------------------------------------------- warp_vec

constexpr int kWarpVecThreads = 128;

// Lane l holds chunks l, l + 32, ... (kChunks of them, 16 bytes each).
template <typename T, int kChunks>
__global__ void __launch_bounds__(kWarpVecThreads) WarpVecKernel(AddLayerNormParams p) {
  constexpr int kVec = Packed16<T>::kSize;
  const int lane = threadIdx.x & 31;
  const int r = blockIdx.x * (kWarpVecThreads / 32) + (threadIdx.x >> 5);
  if (r >= p.rows) return;
  const int64_t offset = static_cast<int64_t>(r) * p.cols;
  T* x = static_cast<T*>(p.x) + offset;
  const T* delta = static_cast<const T*>(p.delta) + offset;
  const int chunks = p.cols / kVec;
  Packed16<T> xs[kChunks], ds[kChunks];
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int c = (lane + 32 * i) * kVec;
    if (lane + 32 * i < chunks) {
      xs[i] = cuda::Load16(x + c);
      if (p.delta != nullptr) ds[i] = cuda::Load16(delta + c);
    }
  }
  float v[kChunks][kVec];
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    if (lane + 32 * i >= chunks) continue;
    Packed16<T> stored;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      float s = cuda::ToFloat(xs[i].v[j]);
      if (p.delta != nullptr) s += cuda::ToFloat(ds[i].v[j]);
      stored.v[j] = cuda::FromFloat<T>(s);
      v[i][j] = cuda::ToFloat(stored.v[j]);
      sum += v[i][j];
    }
    if (p.delta != nullptr) cuda::Store16(x + (lane + 32 * i) * kVec, stored);
  }
  const float mean = cuda::WarpSum(sum) / p.cols;
  float sq = 0.0f;
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    if (lane + 32 * i >= chunks) continue;
#pragma unroll
    for (int j = 0; j < kVec; ++j) sq += (v[i][j] - mean) * (v[i][j] - mean);
  }
  const float rstd = rsqrtf(cuda::WarpSum(sq) / p.cols + p.eps);
  T* out = static_cast<T*>(p.out) + offset;
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    if (lane + 32 * i >= chunks) continue;
    const int c = (lane + 32 * i) * kVec;
    const Packed16<T> w = cuda::Load16(static_cast<const T*>(p.weight) + c);
    const Packed16<T> b = cuda::Load16(static_cast<const T*>(p.bias) + c);
    Packed16<T> o;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      o.v[j] = cuda::FromFloat<T>((v[i][j] - mean) * rstd * cuda::ToFloat(w.v[j]) +
                                  cuda::ToFloat(b.v[j]));
    }
    cuda::Store16(out + c, o);
  }
}

cudaError_t LaunchNaive(const AddLayerNormParams& p, cudaStream_t s) {
  return cuda::DispatchDType(p.dtype, [&](auto zero) {
    NaiveKernel<decltype(zero)><<<(p.rows + 31) / 32, 32, 0, s>>>(p);
    return cudaGetLastError();
  });
}

cudaError_t LaunchWarpVec(const AddLayerNormParams& p, cudaStream_t s) {
  return cuda::DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    constexpr int kVec = Packed16<T>::kSize;
    if (p.cols % kVec != 0) return cudaErrorInvalidValue;
    const int per_lane = (p.cols / kVec + 31) / 32;
    const int blocks = (p.rows + kWarpVecThreads / 32 - 1) / (kWarpVecThreads / 32);
    if (per_lane <= 3) {
      WarpVecKernel<T, 3><<<blocks, kWarpVecThreads, 0, s>>>(p);
    } else if (per_lane <= 7) {
      WarpVecKernel<T, 7><<<blocks, kWarpVecThreads, 0, s>>>(p);
    } else if (per_lane <= 13) {
      WarpVecKernel<T, 13><<<blocks, kWarpVecThreads, 0, s>>>(p);
    } else {
      return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
  });
}

// ---------------------------------------------------------------- reference

struct Expected {
  std::vector<double> x;    // x + delta, rounded to the dtype
  std::vector<double> out;  // LayerNorm of it, fp64
};
Expected Reference(DType t, int rows, int cols, const std::vector<float>& x,
                   const std::vector<float>& delta, const std::vector<float>& w,
                   const std::vector<float>& b, float eps) {
  Expected e;
  e.x.resize(x.size());
  e.out.resize(x.size());
  for (int r = 0; r < rows; ++r) {
    const size_t o = static_cast<size_t>(r) * cols;
    double sum = 0;
    for (int c = 0; c < cols; ++c) {
      e.x[o + c] = RoundTo(t, x[o + c] + delta[o + c]);
      sum += e.x[o + c];
    }
    const double mean = sum / cols;
    double sq = 0;
    for (int c = 0; c < cols; ++c) sq += (e.x[o + c] - mean) * (e.x[o + c] - mean);
    const double rstd = 1.0 / std::sqrt(sq / cols + eps);
    for (int c = 0; c < cols; ++c) e.out[o + c] = (e.x[o + c] - mean) * rstd * w[c] + b[c];
  }
  return e;
}

void RunCase(const Device& d, const Args& args, DType t, int rows, int cols) {
  std::mt19937 rng(rows * 17 + cols);
  std::vector<float> x = RandomValues(static_cast<size_t>(rows) * cols, -2, 2, rng);
  std::vector<float> delta = RandomValues(x.size(), -1, 1, rng);
  std::vector<float> w = RandomValues(cols, 0.5f, 1.5f, rng);
  std::vector<float> b = RandomValues(cols, -0.5f, 0.5f, rng);
  DeviceBuffer x_d = Upload(x, t), delta_d = Upload(delta, t), w_d = Upload(w, t),
               b_d = Upload(b, t), out_d(x_d.bytes());
  const float eps = 1e-5f;
  const Expected ref = Reference(t, rows, cols, x, delta, w, b, eps);
  const Tolerance tol = t == DType::kFloat ? Tolerance{1e-4, 1e-4} : Tolerance{2e-2, 1e-2};

  AddLayerNormParams p;
  p.dtype = t;
  p.x = x_d.get();
  p.delta = delta_d.get();
  p.weight = w_d.get();
  p.bias = b_d.get();
  p.out = out_d.get();
  p.rows = rows;
  p.cols = cols;
  p.eps = eps;
  const std::string shape = "C=" + std::to_string(cols);
  const double bytes = ElementBytes(t) * (4.0 * rows * cols + 2.0 * cols);

  auto run =
      [&](const char* version,
          const std::function<cudaError_t(const AddLayerNormParams&, cudaStream_t)>& launch) {
        if (!args.Wants(std::string("add_layer_norm ") + version + " " + shape)) return;
        Row row{"add_layer_norm", version, shape, rows, t};
        row.bytes = bytes;
        std::vector<float> x_host = x;  // rounded by Upload already
        DeviceBuffer fresh = Upload(x_host, t);
        WB_CHECK_CUDA(cudaMemcpy(x_d.get(), fresh.get(), x_d.bytes(), cudaMemcpyDeviceToDevice));
        out_d.Poison();
        WB_CHECK_CUDA(launch(p, nullptr));
        WB_CHECK_CUDA(cudaDeviceSynchronize());
        const CheckResult cx = Compare(Download(x_d.get(), x.size(), t), ref.x, tol);
        row.check = Compare(Download(out_d.get(), x.size(), t), ref.out, tol);
        row.check.bad += cx.bad;
        row.check.max_abs = std::max(row.check.max_abs, cx.max_abs);
        row.us = TimeGraph([&](cudaStream_t s, int) { WB_CHECK_CUDA(launch(p, s)); }, 50);
        PrintRow(d, row);
      };
  if (rows <= 8 || !args.quick) run("naive", LaunchNaive);
  run("engine", cuda::LaunchAddLayerNorm);
  run("warp_vec", LaunchWarpVec);
}

}  // namespace
}  // namespace nanoserve::workbench

int main(int argc, char** argv) {
  using namespace nanoserve::workbench;
  const Args args = ParseArgs(argc, argv);
  const Device d = OpenDevice();
  Row node{"(graph node)", "empty kernel", "-", 0, DType::kFloat};
  node.checked = false;
  node.us = d.node_us;
  PrintRow(d, node);
  const std::vector<int> batches = args.quick ? std::vector<int>{1, 8} : std::vector<int>{1, 8, 64};
  for (int cols : {768, 1600}) {
    for (DType t : {DType::kBFloat16, DType::kFloat}) {
      for (int rows : batches) RunCase(d, args, t, rows, cols);
    }
  }
  return 0;
}
