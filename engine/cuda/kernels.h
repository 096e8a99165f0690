// The decode step's fused CUDA kernels, on raw device pointers (no LibTorch
// here: engine/cuda/fused_ops.h wraps them for tensors).
//
// Each launcher enqueues on `stream` and returns the launch's error. Element
// types are fp32, bf16 or fp16 (DType); arithmetic is fp32 throughout, and a
// value the reference path would round to the element type (the residual
// stream after an add) is rounded here too, so both paths see the same
// inputs.
#ifndef NANOSERVE_ENGINE_CUDA_KERNELS_H_
#define NANOSERVE_ENGINE_CUDA_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace nanoserve::cuda {

enum class DType { kFloat, kBFloat16, kHalf };

// Attention of one new query token per row over that row's cached keys plus
// the new key, read through the row's block table (paged attention), in
// the style of flash-decoding: the keys 0..lengths[b] of row b are cut into
// `splits` equal ranges, one thread block per (head, row, range), each
// keeping a running max and sum (online softmax); a second kernel combines
// the ranges. The block whose range holds position lengths[b] also writes
// the new key and value into the row's page there.
//
// Pages: key position j of row b, head h, lives in page
// p = block_table[b * max_pages + j / page_size], at element
//   k_pages + p * page_stride + (h * page_size + j % page_size) * head_dim
// (and likewise v_pages): one layer's K and V of a KV pool
// (kv_store/page_layout.h) are such strided views.
struct DecodeAttentionParams {
  DType dtype = DType::kFloat;
  const void* qkv = nullptr;             // (batch, 3 * C): q | k | v of each row's new token
  void* k_pages = nullptr;               // one layer's keys of page 0 (see above)
  void* v_pages = nullptr;               // one layer's values of page 0
  int64_t page_stride = 0;               // elements from a page to the next
  const int32_t* block_table = nullptr;  // (batch, max_pages): each row's pages
  const int32_t* lengths = nullptr;      // (batch,): cached tokens per row; < capacity
  void* out = nullptr;                   // (batch, C): heads side by side
  float* workspace = nullptr;            // DecodeAttentionWorkspaceFloats(...) floats
  int batch = 0;
  int heads = 0;
  int head_dim = 0;  // <= kMaxHeadDim
  int page_size = 0;
  int max_pages = 0;   // capacity = max_pages * page_size
  int splits = 1;      // >= 1
  float scale = 1.0f;  // 1 / sqrt(head_dim)
  // Many queries per row (prefill of a suffix over a cached prefix): null,
  // or (batch,) int32: query b reads block-table row table_row[b].
  const int32_t* table_row = nullptr;
  // 1: key lengths[b] is the query's own new token, taken from qkv and
  // written into its page (decode). 0: keys 0..lengths[b] are all in the
  // pages already and nothing is written (the caller wrote them).
  int append = 1;
};
inline constexpr int kMaxHeadDim = 128;

// Key ranges per (row, head) that keep the GPU's `num_sms` multiprocessors
// busy at this batch size: about two blocks per SM, at least one and at most
// one per 32 keys of capacity.
int DecodeAttentionSplits(int batch, int heads, int capacity, int num_sms);
size_t DecodeAttentionWorkspaceFloats(int batch, int heads, int splits, int head_dim);
cudaError_t LaunchDecodeAttention(const DecodeAttentionParams& p, cudaStream_t stream);

// Row-wise LayerNorm with the residual add in front:
//   x[r] += delta[r] (rounded to the element type; skipped if delta is null)
//   out[r] = (x[r] - mean) / sqrt(var + eps) * weight + bias
// one thread block per row. REQUIRES: cols <= kMaxLayerNormCols.
struct AddLayerNormParams {
  DType dtype = DType::kFloat;
  void* x = nullptr;             // (rows, cols), updated in place
  const void* delta = nullptr;   // (rows, cols) or null
  const void* weight = nullptr;  // (cols)
  const void* bias = nullptr;    // (cols)
  void* out = nullptr;           // (rows, cols)
  int rows = 0;
  int cols = 0;
  float eps = 1e-5f;
};
inline constexpr int kMaxLayerNormCols = 4096;
cudaError_t LaunchAddLayerNorm(const AddLayerNormParams& p, cudaStream_t stream);

// GPT-2's input and first LayerNorm in one kernel:
//   x[r] = wte[ids[r]] + wpe[positions[r]]   (rounded to the element type)
//   out[r] = LayerNorm(x[r]) with weight, bias, eps
// REQUIRES: ids in [0, vocab), positions in [0, n_positions) (unchecked),
// cols <= kMaxLayerNormCols.
struct EmbedLayerNormParams {
  DType dtype = DType::kFloat;
  const void* wte = nullptr;           // (vocab, cols)
  const void* wpe = nullptr;           // (n_positions, cols)
  const int32_t* ids = nullptr;        // (rows,)
  const int32_t* positions = nullptr;  // (rows,)
  const void* weight = nullptr;        // (cols)
  const void* bias = nullptr;          // (cols)
  void* x = nullptr;                   // (rows, cols)
  void* out = nullptr;                 // (rows, cols)
  int rows = 0;
  int cols = 0;
  float eps = 1e-5f;
};
cudaError_t LaunchEmbedLayerNorm(const EmbedLayerNormParams& p, cudaStream_t stream);

// out[r] = the index of row r's largest value (x: (rows, cols) fp32,
// contiguous); NaN counts as largest, ties go to the lower index.
cudaError_t LaunchArgmaxRows(const float* x, int64_t rows, int64_t cols, int64_t* out,
                             cudaStream_t stream);

}  // namespace nanoserve::cuda

#endif  // NANOSERVE_ENGINE_CUDA_KERNELS_H_
