// LibTorch wrappers of engine/cuda/kernels.h: shapes checked, launched on
// the current CUDA stream, errors thrown as c10::Error like any LibTorch op.
// Built only with CUDA (NANOSERVE_WITH_CUDA). tests/engine/cuda_kernels_test
// compares each with its plain LibTorch expression.
#ifndef NANOSERVE_ENGINE_CUDA_FUSED_OPS_H_
#define NANOSERVE_ENGINE_CUDA_FUSED_OPS_H_

#include <cstdint>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "engine/cuda/kernels.h"

namespace nanoserve::cuda {

// x: (N, C) updated in place to x + delta (delta undefined: unchanged);
// returns layer_norm(x, weight, bias, eps), (N, C).
torch::Tensor AddLayerNorm(torch::Tensor& x, const torch::Tensor& delta,
                           const torch::Tensor& weight, const torch::Tensor& bias, double eps);

// ids, positions: (N,) int32. Writes wte[ids] + wpe[positions] into x (N, C)
// and returns its layer_norm, (N, C).
torch::Tensor EmbedLayerNorm(const torch::Tensor& wte, const torch::Tensor& wpe,
                             const torch::Tensor& ids, const torch::Tensor& positions,
                             const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                             torch::Tensor& x);

// qkv: (N, 3C) of the new tokens; k_pages, v_pages: one layer's K and V
// over every page of a pool, (num_pages, H, page_size, D) views (KvCache::
// k_pages); block_table: (rows >= N, max_pages) int32, row b's pages (the
// row stride is max_pages); lengths: (N,) int32, each < max_pages *
// page_size, with row b's pages covering position lengths[b]. Writes row
// b's new key and value at position lengths[b] and returns attention of
// each new query over keys 0..lengths[b], (N, C). `splits` key ranges per
// (row, head) (DecodeAttentionSplits); any value >= 1 gives the same result.
// `vector_values`: values in 16-byte loads (DecodeAttentionParams::
// vector_values, the default); false: one element a thread, for the profile
// and the tests to compare. `min_chunk`: the shortest key range
// (DecodeAttentionParams::min_chunk); kAutoMinChunk: DecodeAttentionMinChunk
// of the shape; any value >= 1 gives the same result.
// `shared`: shared-prefix (cascade) attention (LaunchSharedPrefixAttention)
// where its groups are defined: `groups` (G, kSharedPrefixGroupInts) int32
// on the device, each [keys, count, rows...] (rows holding the same pages
// for keys 0..keys-1, keys whole pages at most each row's length);
// `key_begin` (N,) int32, each row's group's keys or 0; the shared keys
// split into `splits` ranges. bf16 and fp16 at head size 64 only
// (SharedPrefixAttentionTakes). Same result as without, within rounding.
struct SharedPrefix {
  torch::Tensor groups;
  torch::Tensor key_begin;
  int64_t splits = 1;
};
inline constexpr int64_t kAutoMinChunk = -1;
torch::Tensor DecodeAttention(const torch::Tensor& qkv, torch::Tensor& k_pages,
                              torch::Tensor& v_pages, const torch::Tensor& block_table,
                              const torch::Tensor& lengths, int64_t splits,
                              bool vector_values = true, int64_t min_chunk = kAutoMinChunk,
                              const SharedPrefix& shared = {});

// Paged attention of many queries per row (prefill of a suffix after a
// cached prefix), without gathering the prefix: qkv (N, 3C) holds N queries
// (their k and v parts are not read); query i belongs to block-table row
// table_rows[i] ((N,) int32) and attends keys 0..lengths[i] of that row,
// all already written into the pages. k_pages, v_pages, block_table and
// splits as DecodeAttention. Returns (N, C).
torch::Tensor PagedAttention(const torch::Tensor& qkv, const torch::Tensor& k_pages,
                             const torch::Tensor& v_pages, const torch::Tensor& block_table,
                             const torch::Tensor& table_rows, const torch::Tensor& lengths,
                             int64_t splits);

// Writes the keys and values of qkv's N new tokens ((N, 3C); their q parts
// are not read) into one layer's pages: token i's at position positions[i]
// of block-table row table_rows[i] (both (N,) int32). k_pages, v_pages and
// block_table as DecodeAttention; the rows' pages must cover the positions.
// PagedAttention then reads them.
void AppendKv(const torch::Tensor& qkv, torch::Tensor& k_pages, torch::Tensor& v_pages,
              const torch::Tensor& block_table, const torch::Tensor& table_rows,
              const torch::Tensor& positions);

// Attention of qkv's N queries ((N, 3C)) over keys already in the pages
// (AppendKv), in tiles of consecutive queries of one row (LaunchPrefill
// Attention): query i sees keys 0..positions[i] of block-table row
// table_rows[i]; tiles: (T, 2) int32, each tile's first query and count
// (<= kPrefillQueryTile, 0: none). Returns (N, C); rows of queries in no
// tile are left as torch::empty made them. The head size must be one
// PrefillAttentionTakes; the rest as PagedAttention. On tensor cores where
// they take the shape (PrefillAttentionOnTensorCores), as `version` says
// (PrefillAttentionParams::version). Each
// tile's keys split into `splits` ranges (PrefillAttentionParams::splits,
// 1..kMaxPrefillAttentionSplits; PrefillAttentionSplits chooses).
torch::Tensor PrefillAttention(const torch::Tensor& qkv, const torch::Tensor& k_pages,
                               const torch::Tensor& v_pages, const torch::Tensor& block_table,
                               const torch::Tensor& table_rows, const torch::Tensor& positions,
                               const torch::Tensor& tiles, int splits = 1,
                               PrefillAttentionVersion version = PrefillAttentionVersion::kAuto);
// Whether PrefillAttention runs on tensor cores for this element type and
// head size (PrefillAttentionOnTensorCores).
bool PrefillAttentionOnTensorCores(torch::ScalarType dtype, int64_t head_dim);
// Whether DecodeAttention takes a SharedPrefix for this element type and
// head size (SharedPrefixAttentionTakes).
bool SharedPrefixAttentionTakes(torch::ScalarType dtype, int64_t head_dim);

// Scratch of the split-K matrix-vector kernel (LaunchMatvec): an fp32
// workspace and int32 counters (zero between launches) on one device,
// shared by products that run one after another on one stream.
struct MatvecScratch {
  torch::Tensor workspace;  // fp32
  torch::Tensor counters;   // int32, zeros
  int num_sms = 0;
};
// Scratch for products of up to `rows` rows with (k, n) in `shapes`, in
// `dtype` on `device`.
MatvecScratch MakeMatvecScratch(int64_t rows,
                                const std::vector<std::pair<int64_t, int64_t>>& shapes,
                                torch::ScalarType dtype, torch::Device device);

// x: (N, K); weight: (K, M), in x out (Gpt2Model's blocks); bias: (M) or
// undefined. Returns out = x · weight + bias, then GELU (gelu = true) or
// plus `residual` ((N, M) or undefined; rounded as addmm's result added to
// it would be). `out` undefined: a new tensor; else written in place (it may
// be `residual`). K % 8 == 0 and M a multiple of 16 bytes of elements.
// With `ln` (its weight and bias (K)), the product is of
// layer_norm(x, ln.weight, ln.bias, ln.eps) instead of x, the LayerNorm
// folded into the kernel (MatvecParams::ln_weight).
struct MatvecLayerNorm {
  torch::Tensor weight, bias;  // undefined: no LayerNorm
  double eps = 1e-5;
};
torch::Tensor Matvec(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     bool gelu, const torch::Tensor& residual, MatvecScratch& scratch,
                     torch::Tensor out = torch::Tensor(), const MatvecLayerNorm& ln = {});

// logits: (N, V) fp32. Returns each row's argmax, (N,) int64 (LibTorch's
// argmax, with ties to the lower index).
torch::Tensor ArgmaxRows(const torch::Tensor& logits);

// The number of multiprocessors of the current device.
int MultiprocessorCount();

}  // namespace nanoserve::cuda

#endif  // NANOSERVE_ENGINE_CUDA_FUSED_OPS_H_
