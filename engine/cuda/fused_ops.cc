#include "engine/cuda/fused_ops.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <utility>

#include <ATen/cuda/CUDAContext.h>

#include "engine/cuda/kernels.h"

namespace nanoserve::cuda {
namespace {

DType ElementType(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat:
      return DType::kFloat;
    case torch::kBFloat16:
      return DType::kBFloat16;
    case torch::kHalf:
      return DType::kHalf;
    default:
      TORCH_CHECK(false, "fused CUDA ops take fp32, bf16 or fp16, not ", type);
  }
}
DType ElementType(const torch::Tensor& t) { return ElementType(t.scalar_type()); }

void CheckLaunch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, ": ", cudaGetErrorString(err));
}

void CheckDense(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.is_contiguous(), name, " must be a contiguous CUDA tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " has dtype ", t.scalar_type(),
              ", expected ", like.scalar_type());
}

}  // namespace

int MultiprocessorCount() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

torch::Tensor AddLayerNorm(torch::Tensor& x, const torch::Tensor& delta,
                           const torch::Tensor& weight, const torch::Tensor& bias, double eps) {
  CheckDense(x, x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be (N, C)");
  if (delta.defined()) {
    CheckDense(delta, x, "delta");
    TORCH_CHECK(delta.sizes() == x.sizes(), "delta must match x");
  }
  CheckDense(weight, x, "weight");
  CheckDense(bias, x, "bias");
  TORCH_CHECK(weight.numel() == x.size(1) && bias.numel() == x.size(1), "weight/bias must be (C)");
  torch::Tensor out = torch::empty_like(x);
  AddLayerNormParams p;
  p.dtype = ElementType(x);
  p.x = x.data_ptr();
  p.delta = delta.defined() ? delta.data_ptr() : nullptr;
  p.weight = weight.data_ptr();
  p.bias = bias.data_ptr();
  p.out = out.data_ptr();
  p.rows = static_cast<int>(x.size(0));
  p.cols = static_cast<int>(x.size(1));
  p.eps = static_cast<float>(eps);
  CheckLaunch(LaunchAddLayerNorm(p, at::cuda::getCurrentCUDAStream()), "AddLayerNorm");
  return out;
}

torch::Tensor EmbedLayerNorm(const torch::Tensor& wte, const torch::Tensor& wpe,
                             const torch::Tensor& ids, const torch::Tensor& positions,
                             const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                             torch::Tensor& x) {
  CheckDense(wte, wte, "wte");
  CheckDense(wpe, wte, "wpe");
  CheckDense(weight, wte, "weight");
  CheckDense(bias, wte, "bias");
  CheckDense(x, wte, "x");
  TORCH_CHECK(ids.scalar_type() == torch::kInt && positions.scalar_type() == torch::kInt &&
                  ids.is_contiguous() && positions.is_contiguous(),
              "ids and positions must be contiguous int32");
  const int64_t n = ids.numel(), c = wte.size(1);
  TORCH_CHECK(positions.numel() == n && x.size(0) == n && x.size(1) == c,
              "ids, positions and x disagree");
  torch::Tensor out = torch::empty_like(x);
  EmbedLayerNormParams p;
  p.dtype = ElementType(wte);
  p.wte = wte.data_ptr();
  p.wpe = wpe.data_ptr();
  p.ids = ids.data_ptr<int32_t>();
  p.positions = positions.data_ptr<int32_t>();
  p.weight = weight.data_ptr();
  p.bias = bias.data_ptr();
  p.x = x.data_ptr();
  p.out = out.data_ptr();
  p.rows = static_cast<int>(n);
  p.cols = static_cast<int>(c);
  p.eps = static_cast<float>(eps);
  CheckLaunch(LaunchEmbedLayerNorm(p, at::cuda::getCurrentCUDAStream()), "EmbedLayerNorm");
  return out;
}

namespace {

// A per-token input of a paged-attention call: (N,) contiguous int32 on
// qkv's device.
void CheckPerToken(const torch::Tensor& t, const torch::Tensor& qkv, const char* name) {
  TORCH_CHECK(t.scalar_type() == torch::kInt && t.is_contiguous() && t.numel() == qkv.size(0) &&
                  t.device() == qkv.device(),
              name, " must be (N,) contiguous int32 on qkv's device");
}

// The checks DecodeAttention, PagedAttention and AppendKv share: qkv
// (N, 3C), one layer's pages alike and dense within a page on its device in
// its dtype, an int32 block table with dense rows, and (N,) int32 per-token
// inputs. Returns the pages' (heads, page_size, head_dim).
struct PagedShape {
  int64_t heads, page_size, head_dim;
};
PagedShape CheckPaged(
    const torch::Tensor& qkv, const torch::Tensor& k_pages, const torch::Tensor& v_pages,
    const torch::Tensor& block_table,
    std::initializer_list<std::pair<const torch::Tensor*, const char*>> per_token) {
  CheckDense(qkv, qkv, "qkv");
  TORCH_CHECK(k_pages.dim() == 4 && k_pages.sizes() == v_pages.sizes() &&
                  k_pages.strides() == v_pages.strides(),
              "k_pages and v_pages must be (num_pages, H, page_size, D) views alike");
  TORCH_CHECK(k_pages.device() == qkv.device() && k_pages.scalar_type() == qkv.scalar_type(),
              "k_pages must be on qkv's device in its dtype");
  const int64_t n = qkv.size(0), heads = k_pages.size(1), page_size = k_pages.size(2),
                head_dim = k_pages.size(3);
  // Within a page, heads, positions and dimensions are dense.
  TORCH_CHECK(k_pages.stride(3) == 1 && k_pages.stride(2) == head_dim &&
                  k_pages.stride(1) == page_size * head_dim,
              "k_pages must be dense within a page");
  TORCH_CHECK(qkv.dim() == 2 && qkv.size(1) == 3 * heads * head_dim, "qkv must be (N, 3C)");
  TORCH_CHECK(block_table.scalar_type() == torch::kInt && block_table.dim() == 2 &&
                  block_table.stride(1) == 1 && block_table.device() == qkv.device(),
              "block_table must be (rows, max_pages) int32 on qkv's device, rows dense");
  for (const auto& [t, name] : per_token) CheckPerToken(*t, qkv, name);
  return {heads, page_size, head_dim};
}

// DecodeAttention and PagedAttention: `table_rows` undefined (query b uses
// table row b) or (N,) int32; `append` as DecodeAttentionParams says.
torch::Tensor PagedAttentionImpl(const torch::Tensor& qkv, const torch::Tensor& k_pages,
                                 const torch::Tensor& v_pages, const torch::Tensor& block_table,
                                 const torch::Tensor& table_rows, const torch::Tensor& lengths,
                                 int64_t splits, bool append, bool vector_values, int64_t min_chunk,
                                 const SharedPrefix& shared = {}) {
  const int64_t n = qkv.size(0);
  const PagedShape shape =
      table_rows.defined()
          ? CheckPaged(qkv, k_pages, v_pages, block_table,
                       {{&table_rows, "table_rows"}, {&lengths, "lengths"}})
          : CheckPaged(qkv, k_pages, v_pages, block_table, {{&lengths, "lengths"}});
  const int64_t heads = shape.heads, page_size = shape.page_size, head_dim = shape.head_dim;
  if (!table_rows.defined()) {
    TORCH_CHECK(block_table.size(0) >= n, "block_table has fewer rows than qkv");
  }
  TORCH_CHECK(splits >= 1, "splits must be >= 1");
  TORCH_CHECK(min_chunk >= 1 || min_chunk == kAutoMinChunk, "min_chunk must be >= 1 or auto");
  const bool cascade = shared.groups.defined();
  if (cascade) {
    TORCH_CHECK(append && !table_rows.defined(), "shared-prefix attention is decode's");
    TORCH_CHECK(SharedPrefixAttentionTakes(ElementType(qkv), static_cast<int>(head_dim)),
                "shared-prefix attention takes bf16 and fp16 at head size 64");
    TORCH_CHECK(shared.groups.scalar_type() == torch::kInt && shared.groups.dim() == 2 &&
                    shared.groups.size(1) == kSharedPrefixGroupInts &&
                    shared.groups.is_contiguous() && shared.groups.device() == qkv.device(),
                "shared-prefix groups must be (G, kSharedPrefixGroupInts) int32 on qkv's device");
    TORCH_CHECK(shared.key_begin.defined(), "shared-prefix attention needs key_begin");
    CheckPerToken(shared.key_begin, qkv, "key_begin");
    TORCH_CHECK(shared.splits >= 1, "shared-prefix splits must be >= 1");
  }
  const int64_t shared_slots = cascade ? shared.splits : 0;
  torch::Tensor out = torch::empty({n, heads * head_dim}, qkv.options());
  torch::Tensor workspace =
      torch::empty({static_cast<int64_t>(DecodeAttentionWorkspaceFloats(
                       static_cast<int>(n), static_cast<int>(heads),
                       static_cast<int>(splits + shared_slots), static_cast<int>(head_dim)))},
                   qkv.options().dtype(torch::kFloat));
  DecodeAttentionParams p;
  p.dtype = ElementType(qkv);
  p.qkv = qkv.data_ptr();
  p.k_pages = k_pages.data_ptr();
  p.v_pages = v_pages.data_ptr();
  p.page_stride = k_pages.stride(0);
  p.block_table = block_table.data_ptr<int32_t>();
  p.table_row = table_rows.defined() ? table_rows.data_ptr<int32_t>() : nullptr;
  p.append = append ? 1 : 0;
  p.vector_values = vector_values ? 1 : 0;
  p.min_chunk = min_chunk == kAutoMinChunk
                    ? DecodeAttentionMinChunk(static_cast<int>(n), static_cast<int>(heads),
                                              MultiprocessorCount())
                    : static_cast<int>(min_chunk);
  p.lengths = lengths.data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.workspace = workspace.data_ptr<float>();
  p.batch = static_cast<int>(n);
  p.heads = static_cast<int>(heads);
  p.head_dim = static_cast<int>(head_dim);
  p.page_size = static_cast<int>(page_size);
  p.max_pages = static_cast<int>(block_table.stride(0));
  p.splits = static_cast<int>(splits);
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  if (cascade) {
    p.key_begin = shared.key_begin.data_ptr<int32_t>();
    p.shared_slots = static_cast<int>(shared_slots);
    SharedPrefixAttentionParams sp;
    sp.dtype = p.dtype;
    sp.qkv = p.qkv;
    sp.k_pages = p.k_pages;
    sp.v_pages = p.v_pages;
    sp.page_stride = p.page_stride;
    sp.block_table = p.block_table;
    sp.groups = shared.groups.data_ptr<int32_t>();
    sp.workspace = p.workspace;
    sp.max_groups = static_cast<int>(shared.groups.size(0));
    sp.heads = p.heads;
    sp.head_dim = p.head_dim;
    sp.page_size = p.page_size;
    sp.max_pages = p.max_pages;
    sp.slots = static_cast<int>(splits + shared_slots);
    sp.shared_first = static_cast<int>(splits);
    sp.splits = static_cast<int>(shared.splits);
    sp.scale = p.scale;
    CheckLaunch(LaunchSharedPrefixAttention(sp, at::cuda::getCurrentCUDAStream()),
                "SharedPrefixAttention");
  }
  CheckLaunch(LaunchDecodeAttention(p, at::cuda::getCurrentCUDAStream()), "DecodeAttention");
  return out;
}

}  // namespace

torch::Tensor DecodeAttention(const torch::Tensor& qkv, torch::Tensor& k_pages,
                              torch::Tensor& v_pages, const torch::Tensor& block_table,
                              const torch::Tensor& lengths, int64_t splits, bool vector_values,
                              int64_t min_chunk, const SharedPrefix& shared) {
  return PagedAttentionImpl(qkv, k_pages, v_pages, block_table, torch::Tensor(), lengths, splits,
                            /*append=*/true, vector_values, min_chunk, shared);
}

torch::Tensor PagedAttention(const torch::Tensor& qkv, const torch::Tensor& k_pages,
                             const torch::Tensor& v_pages, const torch::Tensor& block_table,
                             const torch::Tensor& table_rows, const torch::Tensor& lengths,
                             int64_t splits) {
  return PagedAttentionImpl(qkv, k_pages, v_pages, block_table, table_rows, lengths, splits,
                            /*append=*/false, /*vector_values=*/true, kAutoMinChunk);
}

void AppendKv(const torch::Tensor& qkv, torch::Tensor& k_pages, torch::Tensor& v_pages,
              const torch::Tensor& block_table, const torch::Tensor& table_rows,
              const torch::Tensor& positions) {
  const PagedShape shape = CheckPaged(qkv, k_pages, v_pages, block_table,
                                      {{&table_rows, "table_rows"}, {&positions, "positions"}});
  AppendKvParams p;
  p.dtype = ElementType(qkv);
  p.qkv = qkv.data_ptr();
  p.k_pages = k_pages.data_ptr();
  p.v_pages = v_pages.data_ptr();
  p.page_stride = k_pages.stride(0);
  p.block_table = block_table.data_ptr<int32_t>();
  p.table_rows = table_rows.data_ptr<int32_t>();
  p.positions = positions.data_ptr<int32_t>();
  p.tokens = static_cast<int>(qkv.size(0));
  p.heads = static_cast<int>(shape.heads);
  p.head_dim = static_cast<int>(shape.head_dim);
  p.page_size = static_cast<int>(shape.page_size);
  p.max_pages = static_cast<int>(block_table.stride(0));
  CheckLaunch(LaunchAppendKv(p, at::cuda::getCurrentCUDAStream()), "AppendKv");
}

torch::Tensor PrefillAttention(const torch::Tensor& qkv, const torch::Tensor& k_pages,
                               const torch::Tensor& v_pages, const torch::Tensor& block_table,
                               const torch::Tensor& table_rows, const torch::Tensor& positions,
                               const torch::Tensor& tiles, int splits,
                               PrefillAttentionVersion version) {
  const PagedShape shape = CheckPaged(qkv, k_pages, v_pages, block_table,
                                      {{&table_rows, "table_rows"}, {&positions, "positions"}});
  TORCH_CHECK(PrefillAttentionTakes(static_cast<int>(shape.head_dim)),
              "prefill attention takes head sizes 16, 32, 64 and 128, not ", shape.head_dim);
  TORCH_CHECK(tiles.scalar_type() == torch::kInt && tiles.is_contiguous() && tiles.dim() == 2 &&
                  tiles.size(1) == 2 && tiles.device() == qkv.device(),
              "tiles must be (T, 2) contiguous int32 on qkv's device");
  TORCH_CHECK(splits >= 1 && splits <= kMaxPrefillAttentionSplits, "prefill attention: ", splits,
              " key splits, not 1..", kMaxPrefillAttentionSplits);
  torch::Tensor out = torch::empty({qkv.size(0), shape.heads * shape.head_dim}, qkv.options());
  torch::Tensor workspace;  // the ranges' partial results
  if (splits > 1) {
    workspace =
        torch::empty({qkv.size(0) * shape.heads * splits * (shape.head_dim + kPrefillPartialHead)},
                     qkv.options().dtype(torch::kFloat));
  }
  PrefillAttentionParams p;
  p.dtype = ElementType(qkv);
  p.qkv = qkv.data_ptr();
  p.k_pages = k_pages.data_ptr();
  p.v_pages = v_pages.data_ptr();
  p.page_stride = k_pages.stride(0);
  p.block_table = block_table.data_ptr<int32_t>();
  p.table_rows = table_rows.data_ptr<int32_t>();
  p.positions = positions.data_ptr<int32_t>();
  p.tiles = tiles.data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.num_tiles = static_cast<int>(tiles.size(0));
  p.heads = static_cast<int>(shape.heads);
  p.head_dim = static_cast<int>(shape.head_dim);
  p.page_size = static_cast<int>(shape.page_size);
  p.max_pages = static_cast<int>(block_table.stride(0));
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(shape.head_dim)));
  p.version = version;
  p.splits = splits;
  p.workspace = splits > 1 ? workspace.data_ptr<float>() : nullptr;
  CheckLaunch(LaunchPrefillAttention(p, at::cuda::getCurrentCUDAStream()), "PrefillAttention");
  return out;
}

bool PrefillAttentionOnTensorCores(torch::ScalarType dtype, int64_t head_dim) {
  return PrefillAttentionOnTensorCores(ElementType(dtype), static_cast<int>(head_dim));
}

bool SharedPrefixAttentionTakes(torch::ScalarType dtype, int64_t head_dim) {
  return SharedPrefixAttentionTakes(ElementType(dtype), static_cast<int>(head_dim));
}

MatvecScratch MakeMatvecScratch(int64_t rows,
                                const std::vector<std::pair<int64_t, int64_t>>& shapes,
                                torch::ScalarType dtype, torch::Device device) {
  MatvecScratch s;
  s.num_sms = MultiprocessorCount();
  const DType type = ElementType(dtype);
  size_t floats = 1;
  int counters = 1;
  for (int64_t r = 1; r <= rows; ++r) {
    for (const auto& [k, n] : shapes) {
      const int splits = MatvecSplits(type, static_cast<int>(r), static_cast<int>(k),
                                      static_cast<int>(n), s.num_sms);
      floats =
          std::max(floats, MatvecWorkspaceFloats(static_cast<int>(r), static_cast<int>(n), splits));
      counters = std::max(counters, MatvecCounters(type, static_cast<int>(r), static_cast<int>(n)));
    }
  }
  auto opts = torch::TensorOptions().device(device);
  s.workspace = torch::empty({static_cast<int64_t>(floats)}, opts.dtype(torch::kFloat));
  s.counters = torch::zeros({counters}, opts.dtype(torch::kInt));
  return s;
}

torch::Tensor Matvec(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     bool gelu, const torch::Tensor& residual, MatvecScratch& scratch,
                     torch::Tensor out, const MatvecLayerNorm& ln) {
  CheckDense(x, x, "x");
  CheckDense(weight, x, "weight");
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(0),
              "x (N, K) and weight (K, M) disagree");
  const int64_t n = x.size(0), k = x.size(1), m = weight.size(1);
  if (bias.defined()) {
    CheckDense(bias, x, "bias");
    TORCH_CHECK(bias.numel() == m, "bias must be (M)");
  }
  TORCH_CHECK(!(gelu && residual.defined()), "GELU and a residual add do not go together");
  if (residual.defined()) {
    CheckDense(residual, x, "residual");
    TORCH_CHECK(residual.size(0) == n && residual.size(1) == m, "residual must be (N, M)");
  }
  if (!out.defined()) out = torch::empty({n, m}, x.options());
  CheckDense(out, x, "out");
  TORCH_CHECK(out.size(0) == n && out.size(1) == m, "out must be (N, M)");
  MatvecParams p;
  p.dtype = ElementType(x);
  p.epilogue = gelu                 ? MatvecEpilogue::kGelu
               : residual.defined() ? MatvecEpilogue::kResidual
                                    : MatvecEpilogue::kNone;
  p.x = x.data_ptr();
  p.weight = weight.data_ptr();
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.residual = residual.defined() ? residual.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.rows = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.n = static_cast<int>(m);
  p.splits = MatvecSplits(p.dtype, p.rows, p.k, p.n, scratch.num_sms);
  TORCH_CHECK(MatvecWorkspaceFloats(p.rows, p.n, p.splits) <=
                      static_cast<size_t>(scratch.workspace.numel()) &&
                  MatvecCounters(p.dtype, p.rows, p.n) <= scratch.counters.numel(),
              "Matvec scratch too small for (", n, ", ", k, ") x (", k, ", ", m, ")");
  if (ln.weight.defined()) {
    TORCH_CHECK(ln.bias.defined(), "a LayerNorm weight without a bias");
    CheckDense(ln.weight, x, "LayerNorm weight");
    CheckDense(ln.bias, x, "LayerNorm bias");
    TORCH_CHECK(ln.weight.numel() == k && ln.bias.numel() == k,
                "LayerNorm weight and bias must be (K)");
    p.ln_weight = ln.weight.data_ptr();
    p.ln_bias = ln.bias.data_ptr();
    p.ln_eps = static_cast<float>(ln.eps);
  }
  p.workspace = scratch.workspace.data_ptr<float>();
  p.counters = reinterpret_cast<unsigned*>(scratch.counters.data_ptr<int32_t>());
  CheckLaunch(LaunchMatvec(p, at::cuda::getCurrentCUDAStream()), "Matvec");
  return out;
}

torch::Tensor ArgmaxRows(const torch::Tensor& logits) {
  TORCH_CHECK(logits.is_cuda() && logits.is_contiguous() && logits.dim() == 2 &&
                  logits.scalar_type() == torch::kFloat,
              "logits must be a contiguous (N, V) fp32 CUDA tensor");
  torch::Tensor out = torch::empty({logits.size(0)}, logits.options().dtype(torch::kLong));
  CheckLaunch(LaunchArgmaxRows(logits.data_ptr<float>(), logits.size(0), logits.size(1),
                               out.data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream()),
              "ArgmaxRows");
  return out;
}

}  // namespace nanoserve::cuda
