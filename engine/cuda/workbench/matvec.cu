// Workbench: the decode step's matrix products at batch 1, 8 and 64, on the
// real GPT-2 shapes, each version checked against an fp64 CPU reference and
// timed as a graph node against the bytes it must move.
//
//   y[r] = x[r] · W + bias, then the shape's epilogue (kernels.h, Matvec):
//   none (qkv), GELU (mlp fc), residual add (attention and mlp projections).
//
// Versions:
//   naive     one thread per output element, a scalar k loop (batch <= 8).
//   tile      the engine's LaunchMatvec with one k range: a lane owns 16 bytes
//             of columns, the block's 4 warps split k; one block per 256
//             (bf16) columns, so few blocks on C = 768.
//   splitk    the engine's LaunchMatvec with MatvecSplits: k also cut across
//             blocks (~4 per SM), partial sums through an fp32 workspace, the
//             last block of a column tile adds them in order.
//   warp_row  one warp per output column over W^T, (n, k) (nn.Linear's
//             layout: the lm_head's own; for the blocks' products a
//             transposed copy), 16-byte loads along k, a warp-shuffle sum.
//   cublasLt  cuBLASLt with the same epilogue (BIAS / GELU_BIAS / beta = 1
//             on the residual), on the stored layout.
//
// Weights are (k, n) as Gpt2Model stores its blocks' products (HF Conv1D,
// in x out); the lm_head is (V padded to 64, C): 50304 x 768 / 1600.
#include "engine/cuda/matvec.cu"  // the engine's kernel: versions tile and splitk

#include "engine/cuda/workbench/workbench.cuh"

#include <type_traits>

#ifndef WORKBENCH_NO_CUBLAS
#include <cublasLt.h>
#endif

namespace nanoserve::workbench {
namespace {

using cuda::MatvecEpilogue;
using cuda::MatvecParams;
using cuda::Packed16;

enum class Layout { kKN, kNK };  // weight (k, n) (the blocks'), or (n, k) (the lm_head's)

struct Shape {
  const char* name;
  int k, n;
  MatvecEpilogue epilogue;
  bool bias;
  Layout layout;
};
const Shape kShapes[] = {
    {"124M qkv 768x2304 +b", 768, 2304, MatvecEpilogue::kNone, true, Layout::kKN},
    {"124M attn.proj 768x768 +b+res", 768, 768, MatvecEpilogue::kResidual, true, Layout::kKN},
    {"124M fc 768x3072 +b+gelu", 768, 3072, MatvecEpilogue::kGelu, true, Layout::kKN},
    {"124M mlp.proj 3072x768 +b+res", 3072, 768, MatvecEpilogue::kResidual, true, Layout::kKN},
    {"124M lm_head 768x50304", 768, 50304, MatvecEpilogue::kNone, false, Layout::kNK},
    {"1.5B qkv 1600x4800 +b", 1600, 4800, MatvecEpilogue::kNone, true, Layout::kKN},
    {"1.5B attn.proj 1600x1600 +b+res", 1600, 1600, MatvecEpilogue::kResidual, true, Layout::kKN},
    {"1.5B fc 1600x6400 +b+gelu", 1600, 6400, MatvecEpilogue::kGelu, true, Layout::kKN},
    {"1.5B mlp.proj 6400x1600 +b+res", 6400, 1600, MatvecEpilogue::kResidual, true, Layout::kKN},
    {"1.5B lm_head 1600x50304", 1600, 50304, MatvecEpilogue::kNone, false, Layout::kNK},
};

// ---------------------------------------------------------------- naive

template <typename T, MatvecEpilogue kEpilogue, Layout kLayout>
__global__ void NaiveKernel(MatvecParams p) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x, row = blockIdx.y;
  if (col >= p.n) return;
  const T* x = static_cast<const T*>(p.x) + static_cast<int64_t>(row) * p.k;
  const T* w = static_cast<const T*>(p.weight);
  float acc = 0.0f;
  for (int k = 0; k < p.k; ++k) {
    const T wv = kLayout == Layout::kKN ? w[static_cast<int64_t>(k) * p.n + col]
                                        : w[static_cast<int64_t>(col) * p.k + k];
    acc = fmaf(cuda::ToFloat(x[k]), cuda::ToFloat(wv), acc);
  }
  if (p.bias != nullptr) acc += cuda::ToFloat(static_cast<const T*>(p.bias)[col]);
  const int64_t offset = static_cast<int64_t>(row) * p.n + col;
  const T* residual = static_cast<const T*>(p.residual) + offset;
  static_cast<T*>(p.out)[offset] = cuda::Epilogue<T, kEpilogue>(acc, residual);
}

// ---------------------------------------------------------------- warp_row

constexpr int kWarpRowThreads = 256;

// Weight (n, k). Grid: (n / 8 warps, row tiles of kRows).
template <typename T, int kRows, MatvecEpilogue kEpilogue>
__global__ void __launch_bounds__(kWarpRowThreads) WarpRowKernel(MatvecParams p) {
  constexpr int kVec = Packed16<T>::kSize;
  const int lane = threadIdx.x & 31;
  const int col = blockIdx.x * (kWarpRowThreads / 32) + (threadIdx.x >> 5);
  const int row0 = blockIdx.y * kRows;
  const int rows = min(kRows, p.rows - row0);
  if (col >= p.n) return;
  const T* w = static_cast<const T*>(p.weight) + static_cast<int64_t>(col) * p.k;
  const T* x = static_cast<const T*>(p.x) + static_cast<int64_t>(row0) * p.k;
  float acc[kRows] = {};
#pragma unroll 4
  for (int c = lane * kVec; c < p.k; c += 32 * kVec) {
    const Packed16<T> wv = cuda::Load16Streaming(w + c);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) continue;
      const Packed16<T> xv = cuda::Load16(x + static_cast<int64_t>(r) * p.k + c);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        acc[r] = fmaf(cuda::ToFloat(xv.v[i]), cuda::ToFloat(wv.v[i]), acc[r]);
      }
    }
  }
  const float bias = p.bias != nullptr ? cuda::ToFloat(static_cast<const T*>(p.bias)[col]) : 0.0f;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float sum = cuda::WarpSum(acc[r]);
    if (lane == r && r < rows) {
      const int64_t offset = static_cast<int64_t>(row0 + r) * p.n + col;
      const T* residual = static_cast<const T*>(p.residual) + offset;
      static_cast<T*>(p.out)[offset] = cuda::Epilogue<T, kEpilogue>(sum + bias, residual);
    }
  }
}

// ---------------------------------------------------------------- launchers

template <typename F>
cudaError_t ForEpilogue(MatvecEpilogue e, F&& f) {
  switch (e) {
    case MatvecEpilogue::kGelu:
      return f(std::integral_constant<MatvecEpilogue, MatvecEpilogue::kGelu>{});
    case MatvecEpilogue::kResidual:
      return f(std::integral_constant<MatvecEpilogue, MatvecEpilogue::kResidual>{});
    case MatvecEpilogue::kNone:
      break;
  }
  return f(std::integral_constant<MatvecEpilogue, MatvecEpilogue::kNone>{});
}

cudaError_t LaunchNaive(const MatvecParams& p, Layout layout, cudaStream_t s) {
  return cuda::DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    return ForEpilogue(p.epilogue, [&](auto e) {
      const dim3 grid((p.n + 255) / 256, p.rows);
      if (layout == Layout::kKN) {
        NaiveKernel<T, decltype(e)::value, Layout::kKN><<<grid, 256, 0, s>>>(p);
      } else {
        NaiveKernel<T, decltype(e)::value, Layout::kNK><<<grid, 256, 0, s>>>(p);
      }
      return cudaGetLastError();
    });
  });
}

cudaError_t LaunchWarpRow(const MatvecParams& p, cudaStream_t s) {
  if (p.k % 8 != 0) return cudaErrorInvalidValue;
  return cuda::DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    return ForEpilogue(p.epilogue, [&](auto e) {
      constexpr MatvecEpilogue kE = decltype(e)::value;
      const int warps = kWarpRowThreads / 32;
      const int tile = p.rows == 1 ? 1 : 8;
      const dim3 grid((p.n + warps - 1) / warps, (p.rows + tile - 1) / tile);
      if (tile == 1) {
        WarpRowKernel<T, 1, kE><<<grid, kWarpRowThreads, 0, s>>>(p);
      } else {
        WarpRowKernel<T, 8, kE><<<grid, kWarpRowThreads, 0, s>>>(p);
      }
      return cudaGetLastError();
    });
  });
}

// ---------------------------------------------------------------- cuBLASLt

#ifndef WORKBENCH_NO_CUBLAS
#define WB_CHECK_LT(expr)                                                              \
  do {                                                                                 \
    const cublasStatus_t wb_st = (expr);                                               \
    if (wb_st != CUBLAS_STATUS_SUCCESS) {                                              \
      std::fprintf(stderr, "%s:%d: %s: cublas status %d\n", __FILE__, __LINE__, #expr, \
                   static_cast<int>(wb_st));                                           \
      return false;                                                                    \
    }                                                                                  \
  } while (0)

// out (rows, n) = epilogue(x (rows, k) · W + bias) through cuBLASLt, in
// column-major terms D (n x rows) = op(A) (n x k) · B (k x rows) (+ C).
class LtMatvec {
 public:
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;
  ~LtMatvec() {
    if (pref_) cublasLtMatmulPreferenceDestroy(pref_);
    for (auto* l : {a_, b_, c_}) {
      if (l) cublasLtMatrixLayoutDestroy(l);
    }
    if (desc_) cublasLtMatmulDescDestroy(desc_);
    if (handle_) cublasLtDestroy(handle_);
  }
  // False (and a message) if cuBLASLt has no algorithm for it.
  bool Init(DType t, Layout layout, const MatvecParams& p) {
    const cudaDataType_t type = t == DType::kFloat ? CUDA_R_32F : CUDA_R_16BF;
    WB_CHECK_LT(cublasLtCreate(&handle_));
    WB_CHECK_LT(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = layout == Layout::kKN ? CUBLAS_OP_N : CUBLAS_OP_T;
    WB_CHECK_LT(
        cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    if (p.bias != nullptr) {
      epilogue = p.epilogue == MatvecEpilogue::kGelu ? CUBLASLT_EPILOGUE_GELU_BIAS
                                                     : CUBLASLT_EPILOGUE_BIAS;
    } else if (p.epilogue == MatvecEpilogue::kGelu) {
      epilogue = CUBLASLT_EPILOGUE_GELU;
    }
    WB_CHECK_LT(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                               sizeof(epilogue)));
    if (layout == Layout::kKN) {
      WB_CHECK_LT(cublasLtMatrixLayoutCreate(&a_, type, p.n, p.k, p.n));
    } else {
      WB_CHECK_LT(cublasLtMatrixLayoutCreate(&a_, type, p.k, p.n, p.k));
    }
    WB_CHECK_LT(cublasLtMatrixLayoutCreate(&b_, type, p.k, p.rows, p.k));
    WB_CHECK_LT(cublasLtMatrixLayoutCreate(&c_, type, p.n, p.rows, p.n));
    WB_CHECK_LT(cublasLtMatmulPreferenceCreate(&pref_));
    size_t ws = kWorkspaceBytes;
    WB_CHECK_LT(cublasLtMatmulPreferenceSetAttribute(
        pref_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    int found = 0;
    WB_CHECK_LT(
        cublasLtMatmulAlgoGetHeuristic(handle_, desc_, a_, b_, c_, c_, pref_, 1, &heur_, &found));
    if (found == 0) {
      std::fprintf(stderr, "cublasLt: no algorithm\n");
      return false;
    }
    beta_ = p.epilogue == MatvecEpilogue::kResidual ? 1.0f : 0.0f;
    workspace_ = DeviceBuffer(kWorkspaceBytes);
    return true;
  }
  cudaError_t Run(const MatvecParams& p, cudaStream_t s) {
    if (p.bias != nullptr) {
      const cublasStatus_t st = cublasLtMatmulDescSetAttribute(
          desc_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias));
      if (st != CUBLAS_STATUS_SUCCESS) return cudaErrorUnknown;
    }
    const float alpha = 1.0f;
    const void* c = beta_ != 0.0f ? p.residual : p.out;
    const cublasStatus_t st =
        cublasLtMatmul(handle_, desc_, &alpha, p.weight, a_, p.x, b_, &beta_, c, c_, p.out, c_,
                       &heur_.algo, workspace_.get(), kWorkspaceBytes, s);
    return st == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown;
  }

 private:
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
  cublasLtMatmulPreference_t pref_ = nullptr;
  cublasLtMatmulHeuristicResult_t heur_ = {};
  float beta_ = 0.0f;
  DeviceBuffer workspace_;
};
#endif  // WORKBENCH_NO_CUBLAS

// ---------------------------------------------------------------- reference

// y = x · W (+ bias) in fp64 from the rounded inputs, then the epilogue as
// the kernels apply it (the residual add takes y rounded to the dtype).
std::vector<double> Reference(const Shape& s, int rows, DType t, const std::vector<float>& x,
                              const std::vector<float>& w, const std::vector<float>& bias,
                              const std::vector<float>& residual) {
  const int k = s.k, n = s.n;
  std::vector<double> y(static_cast<size_t>(rows) * n, 0.0);
  ParallelFor(n, [&](size_t c0, size_t c1) {
    std::vector<double> acc(c1 - c0);
    for (int r = 0; r < rows; ++r) {
      std::fill(acc.begin(), acc.end(), 0.0);
      const float* xr = x.data() + static_cast<size_t>(r) * k;
      if (s.layout == Layout::kKN) {
        for (int kk = 0; kk < k; ++kk) {
          const double xv = xr[kk];
          const float* wr = w.data() + static_cast<size_t>(kk) * n;
          for (size_t c = c0; c < c1; ++c) acc[c - c0] += xv * wr[c];
        }
      } else {
        for (size_t c = c0; c < c1; ++c) {
          const float* wr = w.data() + c * k;
          double sum = 0;
          for (int kk = 0; kk < k; ++kk) sum += static_cast<double>(xr[kk]) * wr[kk];
          acc[c - c0] = sum;
        }
      }
      for (size_t c = c0; c < c1; ++c) {
        double v = acc[c - c0] + (s.bias ? bias[c] : 0.0);
        const size_t i = static_cast<size_t>(r) * n + c;
        if (s.epilogue == MatvecEpilogue::kGelu) {
          v = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        } else if (s.epilogue == MatvecEpilogue::kResidual) {
          v = residual[i] + RoundTo(t, static_cast<float>(v));
        }
        y[i] = v;
      }
    }
  });
  return y;
}

// A fast uniform generator (splitmix64): the weights run to 80M values.
std::vector<float> FastRandom(size_t n, float scale, uint64_t seed) {
  std::vector<float> v(n);
  ParallelFor(n, [&](size_t b, size_t e) {
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + b;
    for (size_t i = b; i < e; ++i) {
      z += 0x9e3779b97f4a7c15ull;
      uint64_t m = z;
      m = (m ^ (m >> 30)) * 0xbf58476d1ce4e5b9ull;
      m = (m ^ (m >> 27)) * 0x94d049bb133111ebull;
      m ^= m >> 31;
      v[i] = scale * (static_cast<float>(m >> 40) / 8388608.0f - 1.0f);  // [-scale, scale)
    }
  });
  return v;
}

// ---------------------------------------------------------------- one case

struct Weights {
  std::vector<float> host;  // as stored (s.layout), rounded to the dtype
  DeviceBuffer stored;      // `copies` copies, each `bytes`
  DeviceBuffer transposed;  // (n, k) copies, kKN shapes only (warp_row)
  size_t bytes = 0;
  int copies = 1;
  const void* Copy(const DeviceBuffer& b, int i) const {
    return static_cast<const char*>(b.get()) + (i % copies) * bytes;
  }
};

Weights MakeWeights(const Device& d, const Shape& s, DType t) {
  Weights w;
  const size_t count = static_cast<size_t>(s.k) * s.n;
  w.host = FastRandom(count, std::sqrt(3.0f / s.k), 1 + s.k * 7919 + s.n);  // outputs ~ 1
  w.bytes = count * ElementBytes(t);
  w.copies = CopiesToMissL2(d, w.bytes);
  auto replicate = [&](std::vector<float>& values) {
    DeviceBuffer one = Upload(values, t);
    DeviceBuffer all(w.bytes * w.copies);
    for (int i = 0; i < w.copies; ++i) {
      WB_CHECK_CUDA(
          cudaMemcpy(all.as<char>() + i * w.bytes, one.get(), w.bytes, cudaMemcpyDeviceToDevice));
    }
    return all;
  };
  w.stored = replicate(w.host);
  if (s.layout == Layout::kKN) {
    std::vector<float> t_host(count);
    for (int kk = 0; kk < s.k; ++kk) {
      for (int c = 0; c < s.n; ++c)
        t_host[static_cast<size_t>(c) * s.k + kk] = w.host[kk * static_cast<size_t>(s.n) + c];
    }
    w.transposed = replicate(t_host);
  }
  return w;
}

void RunCase(const Device& d, const Args& args, const Shape& s, DType t, const Weights& w,
             int rows) {
  std::mt19937 rng(rows * 131 + s.n);
  std::vector<float> x = RandomValues(static_cast<size_t>(rows) * s.k, -1, 1, rng);
  std::vector<float> bias = RandomValues(s.n, -0.5f, 0.5f, rng);
  std::vector<float> residual = RandomValues(static_cast<size_t>(rows) * s.n, -1, 1, rng);
  DeviceBuffer x_d = Upload(x, t), bias_d = Upload(bias, t), residual_d = Upload(residual, t);
  DeviceBuffer out(static_cast<size_t>(rows) * s.n * ElementBytes(t));
  const std::vector<double> ref = Reference(s, rows, t, x, w.host, bias, residual);
  const Tolerance tol = t == DType::kFloat ? Tolerance{1e-4, 1e-4} : Tolerance{1e-2, 1e-2};

  MatvecParams p;
  p.dtype = t;
  p.epilogue = s.epilogue;
  p.x = x_d.get();
  p.bias = s.bias ? bias_d.get() : nullptr;
  p.residual = s.epilogue == MatvecEpilogue::kResidual ? residual_d.get() : nullptr;
  p.out = out.get();
  p.rows = rows;
  p.k = s.k;
  p.n = s.n;
  const double bytes = static_cast<double>(w.bytes) +
                       ElementBytes(t) * (static_cast<double>(rows) * s.k + (s.bias ? s.n : 0) +
                                          static_cast<double>(rows) * s.n *
                                              (s.epilogue == MatvecEpilogue::kResidual ? 2 : 1));

  // Checks `launch` (weight copy 0) and times it over the copies.
  double cublas_us = -1;
  auto run = [&](const char* version, const DeviceBuffer& weights,
                 const std::function<cudaError_t(MatvecParams, cudaStream_t)>& launch) {
    if (!args.Wants(std::string("matvec ") + version + " " + s.name)) return;
    Row row{"matvec", version, s.name, rows, t};
    row.bytes = bytes;
    out.Poison();
    MatvecParams q = p;
    q.weight = w.Copy(weights, 0);
    WB_CHECK_CUDA(launch(q, nullptr));
    WB_CHECK_CUDA(cudaDeviceSynchronize());
    row.check = Compare(Download(out.get(), static_cast<size_t>(rows) * s.n, t), ref, tol);
    // One launch's time sets how many the graph holds (slow versions: few).
    const double once =
        TimeGraph([&](cudaStream_t st, int) { WB_CHECK_CUDA(launch(q, st)); }, 1, 3);
    const int launches = once > 200 ? w.copies : std::max(w.copies, 20);
    row.us = TimeGraph(
        [&](cudaStream_t st, int i) {
          MatvecParams qi = p;
          qi.weight = w.Copy(weights, i);
          WB_CHECK_CUDA(launch(qi, st));
        },
        launches, once > 1000 ? 5 : 15);
    if (std::string(version) == "cublasLt") cublas_us = row.us;
    row.cublas_us = cublas_us;
    PrintRow(d, row);
  };

#ifndef WORKBENCH_NO_CUBLAS
  LtMatvec lt;
  MatvecParams lt_p = p;
  lt_p.weight = w.stored.get();
  if (lt.Init(t, s.layout, lt_p)) {
    run("cublasLt", w.stored, [&](MatvecParams q, cudaStream_t st) { return lt.Run(q, st); });
  }
#endif
  if (rows <= 8) {
    run("naive", w.stored,
        [&](MatvecParams q, cudaStream_t st) { return LaunchNaive(q, s.layout, st); });
  }
  if (s.layout == Layout::kKN) {
    run("tile", w.stored, [&](MatvecParams q, cudaStream_t st) {
      q.splits = 1;
      return cuda::LaunchMatvec(q, st);
    });
    const int splits = cuda::MatvecSplits(t, rows, s.k, s.n, d.props.multiProcessorCount);
    DeviceBuffer workspace(cuda::MatvecWorkspaceFloats(rows, s.n, splits) * sizeof(float));
    DeviceBuffer counters(cuda::MatvecCounters(t, rows, s.n) * sizeof(unsigned));
    WB_CHECK_CUDA(cudaMemset(counters.get(), 0, counters.bytes()));
    const std::string name = "splitk/" + std::to_string(splits);
    run(name.c_str(), w.stored, [&](MatvecParams q, cudaStream_t st) {
      q.splits = splits;
      q.workspace = workspace.as<float>();
      q.counters = counters.as<unsigned>();
      return cuda::LaunchMatvec(q, st);
    });
    run("warp_row(W^T)", w.transposed, LaunchWarpRow);
  } else {
    run("warp_row", w.stored, LaunchWarpRow);
  }
}

}  // namespace
}  // namespace nanoserve::workbench

int main(int argc, char** argv) {
  using namespace nanoserve::workbench;
  const Args args = ParseArgs(argc, argv);
  const Device d = OpenDevice();
  const std::vector<int> batches = args.quick ? std::vector<int>{1, 8} : std::vector<int>{1, 8, 64};
  for (const Shape& s : kShapes) {
    if (args.quick && std::string(s.name).find("124M qkv") == std::string::npos &&
        std::string(s.name).find("124M mlp.proj") == std::string::npos) {
      continue;
    }
    for (DType t : {DType::kBFloat16, DType::kFloat}) {
      const Weights w = MakeWeights(d, s, t);
      for (int rows : batches) RunCase(d, args, s, t, w, rows);
    }
  }
  return 0;
}
