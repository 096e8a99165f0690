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
  // 1: values read in 16-byte loads where head_dim allows (16, 64, 128):
  // 255 against 543 us a batch-64 step's 12 layers on an H100 in bf16
  // (docs/decode.md); 0: one element per thread per key, kept for the
  // tests and the step's profile to compare.
  int vector_values = 1;
  // A key range is never shorter than this (but for the row's last): the
  // splits cover ceil((lengths[b] + 1) / splits) keys each, or min_chunk if
  // more, and those past the row's keys exit at once. Fixed splits per
  // graph (chosen for the cache's capacity) then do not spread a short row
  // over many nearly idle blocks. 1: every split takes a share.
  int min_chunk = 1;
  // Shared-prefix (cascade) attention, off where null: row b's keys
  // 0..key_begin[b]-1 are left to LaunchSharedPrefixAttention, which writes
  // their partial results into this workspace's slots splits ..
  // splits + shared_slots - 1 of the row (the slots of a (row, head) are
  // splits + shared_slots); the splits here cover keys key_begin[b]..L, and
  // the merge takes the shared slots too where key_begin[b] > 0.
  const int32_t* key_begin = nullptr;  // (batch,) or null
  int shared_slots = 0;
};
inline constexpr int kMaxHeadDim = 128;

// Key ranges per (row, head) that keep the GPU's `num_sms` multiprocessors
// busy at this batch size: about two blocks per SM, at least one and at most
// one per 32 keys of capacity.
int DecodeAttentionSplits(int batch, int heads, int capacity, int num_sms);
// DecodeAttentionParams::min_chunk for this shape: a whole tile of keys
// (128) where rows x heads fill the SMs at least once, so that each block
// scores a full tile; 32 where they do not, so that a row's keys still
// spread over several SMs.
int DecodeAttentionMinChunk(int batch, int heads, int num_sms);
size_t DecodeAttentionWorkspaceFloats(int batch, int heads, int splits, int head_dim);
cudaError_t LaunchDecodeAttention(const DecodeAttentionParams& p, cudaStream_t stream);

// Decode attention over the leading pages a group of rows shares, once for
// the group (cascade attention: FlashInfer's cascade inference, Hydragen):
// the group's rows' new-token queries (up to kSharedPrefixGroupRows) as one
// tile against the shared keys 0..keys-1, on tensor cores (bf16 and fp16 at
// head size 64: SharedPrefixAttentionTakes), split into `splits` ranges of
// whole 64-key tiles; each (row, head, range) writes its partial result
// (max score, sum of weights, unnormalised output: DecodeAttentionParams'
// layout) into slot shared_first + range of the decode workspace, for
// LaunchDecodeAttention's merge (its key_begin and shared_slots). Groups:
// (max_groups, kSharedPrefixGroupInts) int32, each [keys, count, row...];
// keys 0 or count 0: no group. Every row of a group must hold the same pages
// for keys 0..keys-1 (the first row's block table is read), and its own
// position must be past them.
inline constexpr int kSharedPrefixGroupRows = 32;
inline constexpr int kSharedPrefixGroupInts = 2 + kSharedPrefixGroupRows;
struct SharedPrefixAttentionParams {
  DType dtype = DType::kBFloat16;
  const void* qkv = nullptr;  // (batch, 3C)
  const void* k_pages = nullptr;
  const void* v_pages = nullptr;
  int64_t page_stride = 0;
  const int32_t* block_table = nullptr;  // (batch, max_pages)
  const int32_t* groups = nullptr;       // (max_groups, kSharedPrefixGroupInts)
  float* workspace = nullptr;            // the decode attention's
  int max_groups = 0;
  int heads = 0;
  int head_dim = 0;
  int page_size = 0;
  int max_pages = 0;
  int slots = 0;         // partial slots of a (row, head) in the workspace
  int shared_first = 0;  // the first of this pass's slots
  int splits = 1;        // key ranges: slots shared_first .. shared_first + splits - 1
  float scale = 1.0f;
};
bool SharedPrefixAttentionTakes(DType dtype, int head_dim);
cudaError_t LaunchSharedPrefixAttention(const SharedPrefixAttentionParams& p, cudaStream_t stream);

// The keys and values of `tokens` new tokens into their rows' pages (a
// prefill pass writes them all before PagedAttention reads them): token i's
// k and v parts of qkv go to position positions[i] of block-table row
// table_rows[i], laid out in the pages as DecodeAttentionParams says. Rows
// padded with the scratch page may take several tokens' writes at one
// place; nothing reads them.
struct AppendKvParams {
  DType dtype = DType::kFloat;
  const void* qkv = nullptr;             // (tokens, 3 * C): q | k | v of each token
  void* k_pages = nullptr;               // one layer's keys of page 0
  void* v_pages = nullptr;               // one layer's values of page 0
  int64_t page_stride = 0;               // elements from a page to the next
  const int32_t* block_table = nullptr;  // (rows, max_pages)
  const int32_t* table_rows = nullptr;   // (tokens,): each token's block-table row
  const int32_t* positions = nullptr;    // (tokens,): < max_pages * page_size
  int tokens = 0;
  int heads = 0;
  int head_dim = 0;
  int page_size = 0;
  int max_pages = 0;
};
cudaError_t LaunchAppendKv(const AppendKvParams& p, cudaStream_t stream);

// Attention of a prefill pass's queries over their rows' paged keys (which
// AppendKv has written, the pass's own included), tiled as FlashAttention:
// one thread block per (head, query tile), a tile being up to
// kPrefillQueryTile consecutive tokens of one row; each tile of keys is read
// from the pages once for all of the tile's queries (PagedAttention reads
// them once per query). Query i (a token of the flat list) attends to keys
// 0..positions[i] of block-table row table_rows[i]. tiles[2t], tiles[2t+1]:
// tile t's first token and count (0: no tile, the block exits). Pages laid
// out as DecodeAttentionParams says. head_dim: PrefillAttentionTakes.
inline constexpr int kPrefillQueryTile = 32;
// The prefill attention kernels (PrefillAttentionParams::version):
//   kWmma: 2 warps of 16 queries, S = Q K^T and O += P V by nvcuda::wmma
//     16x16x16 products, the softmax and the running output in shared
//     memory between them.
//   kRegisters: FlashAttention 2's register form: the same 2 warps, Q, S, P
//     and the running output in registers as mma.sync m16n8k16 fragments
//     (P passed from S's accumulators to the next product as they lie),
//     K and V loaded by ldmatrix from two shared-memory stages that
//     cp.async fills a tile ahead.
enum class PrefillAttentionVersion { kAuto, kFma, kWmma, kRegisters };
struct PrefillAttentionParams {
  DType dtype = DType::kFloat;
  const void* qkv = nullptr;  // (tokens, 3 * C): the queries' q parts are read
  const void* k_pages = nullptr;
  const void* v_pages = nullptr;
  int64_t page_stride = 0;
  const int32_t* block_table = nullptr;  // (rows, max_pages)
  const int32_t* table_rows = nullptr;   // (tokens,)
  const int32_t* positions = nullptr;    // (tokens,)
  const int32_t* tiles = nullptr;        // (num_tiles, 2): first token, count
  void* out = nullptr;                   // (tokens, C): rows of tokens in no tile untouched
  int num_tiles = 0;
  int heads = 0;
  int head_dim = 0;
  int page_size = 0;
  int max_pages = 0;
  float scale = 1.0f;
  // Which kernel: kAuto takes the tensor cores where they take the shape
  // (PrefillAttentionOnTensorCores: the nvcuda::wmma kernel) and fp32 FMA
  // elsewhere; kFma multiplies in fp32 FMA everywhere (the tensor cores'
  // reference); kWmma and kRegisters name a tensor-core kernel, FMA where
  // the tensor cores do not take the shape.
  PrefillAttentionVersion version = PrefillAttentionVersion::kAuto;
  // Split over the keys (flash-decoding's split-KV): each tile's keys
  // 0..keys-1 cut into `splits` ranges of whole 64-key tiles, a block per
  // (head, tile, range) writing its queries' partial results (max score,
  // sum of weights, unnormalised output) to `workspace`, then a second
  // kernel merging a tile's ranges into `out`. A few tiles over many keys
  // (a short suffix after a long cached prefix) then spread over the GPU,
  // not down one block's key loop. 1: a block a tile, no workspace.
  int splits = 1;
  // (tokens, heads, splits, head_dim + kPrefillPartialHead) floats,
  // 16-byte aligned.
  float* workspace = nullptr;
};
inline constexpr int kPrefillPartialHead = 4;
// The splits for a prefill pass of up to `tokens` queries (of `heads`
// heads) over at most `max_keys` keys a tile, on `num_sms`
// multiprocessors: enough (head, tile, range) blocks for every
// multiprocessor to take several, each range at least 64 keys, at most
// kMaxPrefillAttentionSplits for a pass of a few queries and 4 for more.
inline constexpr int kMaxPrefillAttentionSplits = 16;
int PrefillAttentionSplits(int tokens, int heads, int max_keys, int num_sms);
bool PrefillAttentionTakes(int head_dim);  // 16, 32, 64 or 128
// Whether the launch runs on tensor cores (16-bit products, fp32 sums): bf16
// and fp16 at head size 64; else fp32 FMA.
bool PrefillAttentionOnTensorCores(DType dtype, int head_dim);
cudaError_t LaunchPrefillAttention(const PrefillAttentionParams& p, cudaStream_t stream);

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

// Matrix-vector products of the decode step's small batches, streaming the
// weight once (it is read from device memory; x, bias and the residual are
// small and cached):
//   y[r] = x[r] · weight (+ bias)               (rows, n), fp32 sums
//   out[r] = y[r]                                kNone
//   out[r] = gelu_tanh(y[r])                     kGelu
//   out[r] = residual[r] + round_to_T(y[r])      kResidual: the reference
//                                                path's addmm, then add
// rounded once to the element type at the end. The weight is (k, n), in x
// out, as Gpt2Model stores its blocks' products (HF Conv1D; addmm(b, x, w)).
// Each lane owns 16 bytes of columns (8 bf16, 4 fp32) and the block's 4
// warps split its k range; with splits > 1 the k range is also cut across
// thread blocks (split-K, to fill the multiprocessors at batch 1): each block
// writes fp32 partial sums to `workspace`, and the last block of a column
// tile to finish (counted in `counters`) adds them in split order (so the
// result does not depend on timing), applies the epilogue and sets its
// counter back to 0, so the launch can be replayed in a graph.
// REQUIRES: k % 8 == 0; n a multiple of 16 bytes of elements; x, weight,
// bias, residual and out 16-byte aligned; counters zero before the first
// launch (cudaMemset) when splits > 1.
enum class MatvecEpilogue { kNone, kGelu, kResidual };
struct MatvecParams {
  DType dtype = DType::kFloat;
  MatvecEpilogue epilogue = MatvecEpilogue::kNone;
  const void* x = nullptr;         // (rows, k)
  const void* weight = nullptr;    // (k, n)
  const void* bias = nullptr;      // (n) or null
  const void* residual = nullptr;  // (rows, n), kResidual only; may alias out
  void* out = nullptr;             // (rows, n)
  float* workspace = nullptr;      // MatvecWorkspaceFloats(...) floats (splits > 1)
  unsigned* counters = nullptr;    // MatvecCounters(...) zeroed once (splits > 1)
  int rows = 0;                    // any; tiles of kMatvecRowTile rows share a weight read
  int k = 0;
  int n = 0;
  int splits = 1;  // k ranges (MatvecSplits); 1: no workspace, no counters
  // Optional LayerNorm in front (the decode step's LN1 and LN2 folded into
  // the QKV and MLP products, one kernel less each): x is then the residual
  // stream, and the product is of LayerNorm(x) with ln_weight, ln_bias (k
  // each, 16-byte aligned) and ln_eps, each normalized value rounded to the
  // element type as AddLayerNorm's output is. Every block computes its rows'
  // mean and variance over all of k (two passes, fp32) before its own k
  // range. Null: x as it is. Not with kResidual.
  const void* ln_weight = nullptr;
  const void* ln_bias = nullptr;
  float ln_eps = 1e-5f;
};
inline constexpr int kMatvecRowTile = 8;
// Split count for a product on `num_sms` multiprocessors: about four blocks
// per multiprocessor, each k range at least 32 deep, the partial sums at
// most a quarter of the weight's bytes. Every value >= 1 gives the same
// result up to fp32 summation order.
int MatvecSplits(DType dtype, int rows, int k, int n, int num_sms);
size_t MatvecWorkspaceFloats(int rows, int n, int splits);
int MatvecCounters(DType dtype, int rows, int n);
cudaError_t LaunchMatvec(const MatvecParams& p, cudaStream_t stream);

// out[r] = the index of row r's largest value (x: (rows, cols) fp32,
// contiguous); NaN counts as largest, ties go to the lower index.
cudaError_t LaunchArgmaxRows(const float* x, int64_t rows, int64_t cols, int64_t* out,
                             cudaStream_t stream);

}  // namespace nanoserve::cuda

#endif  // NANOSERVE_ENGINE_CUDA_KERNELS_H_
