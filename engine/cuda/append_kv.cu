// Writes the keys and values of many new tokens into their rows' pages (a
// prefill pass's K/V, before PagedAttention reads them): one thread block
// per token, each thread moving elements of the token's k and v parts of
// qkv to position positions[i] of block-table row table_rows[i].
#include "engine/cuda/common.cuh"

namespace nanoserve::cuda {
namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads) AppendKvKernel(AppendKvParams p) {
  const int i = blockIdx.x;
  const int D = p.head_dim, C = p.heads * D;
  const int position = p.positions[i];
  const int32_t* table = p.block_table + static_cast<int64_t>(p.table_rows[i]) * p.max_pages;
  const int64_t page = table[position / p.page_size];
  const int64_t slot = page * p.page_stride + static_cast<int64_t>(position % p.page_size) * D;
  const T* k = static_cast<const T*>(p.qkv) + static_cast<int64_t>(i) * 3 * C + C;
  const T* v = k + C;
  T* k_pages = static_cast<T*>(p.k_pages);
  T* v_pages = static_cast<T*>(p.v_pages);
  // Element c = h * D + d of the token lives at head h's run of the page:
  // slot + h * page_size * D + d.
  for (int c = threadIdx.x; c < C; c += kThreads) {
    const int h = c / D, d = c % D;
    const int64_t at = slot + static_cast<int64_t>(h) * p.page_size * D + d;
    k_pages[at] = k[c];
    v_pages[at] = v[c];
  }
}

}  // namespace

cudaError_t LaunchAppendKv(const AppendKvParams& p, cudaStream_t stream) {
  if (p.tokens <= 0) return cudaSuccess;
  if (p.heads <= 0 || p.head_dim <= 0 || p.page_size <= 0 || p.max_pages <= 0 ||
      p.page_stride <= 0) {
    return cudaErrorInvalidValue;
  }
  return DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    AppendKvKernel<T><<<p.tokens, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace nanoserve::cuda
