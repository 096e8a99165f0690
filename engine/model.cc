#include "engine/model.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include <torch/cuda.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/torch_status.h"
#include "kv_cache/shared_memory.h"

#ifdef NANOSERVE_WITH_CUDA
#include "engine/cuda/fused_ops.h"
#include "engine/cuda/kernels.h"
#endif

namespace nanoserve {
namespace {

// HF Conv1D: weight stored (in, out). x: (B, T, in) -> (B, T, out).
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  auto out = torch::addmm(b, x.reshape({-1, x.size(-1)}), w);
  return out.view({x.size(0), x.size(1), w.size(1)});
}

}  // namespace

absl::StatusOr<std::unique_ptr<Gpt2Model>> Gpt2Model::Create(const Checkpoint& checkpoint,
                                                             const ModelOptions& options) {
  if (options.device.is_cuda() && !torch::cuda::is_available()) {
    return absl::UnavailableError("--device cuda: no CUDA GPU is available to this process");
  }
  const Gpt2Config& config = checkpoint.config;
  for (const auto& [name, shape] : Gpt2ParameterShapes(config)) {
    auto it = checkpoint.weights.find(name);
    if (it == checkpoint.weights.end()) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint lacks tensor ", name));
    }
    if (it->second.sizes().vec() != shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint tensor ", name, " has the wrong shape"));
    }
    absl::StatusOr<bool> finite = TorchResult(
        "checking weights", [&] { return torch::isfinite(it->second).all().item<bool>(); });
    if (!finite.ok()) return finite.status();
    if (!*finite) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint tensor ", name, " holds NaN or infinite values"));
    }
  }
  if (options.attention == AttentionKind::kFused) PrepareFusedAttention();
  std::unique_ptr<Gpt2Model> model(new Gpt2Model(config, options));
  // Each block's tensors and their names in the checkpoint.
  static constexpr std::pair<torch::Tensor Block::*, const char*> kBlockTensors[] = {
      {&Block::ln_1_w, "ln_1.weight"},           {&Block::ln_1_b, "ln_1.bias"},
      {&Block::c_attn_w, "attn.c_attn.weight"},  {&Block::c_attn_b, "attn.c_attn.bias"},
      {&Block::c_proj_w, "attn.c_proj.weight"},  {&Block::c_proj_b, "attn.c_proj.bias"},
      {&Block::ln_2_w, "ln_2.weight"},           {&Block::ln_2_b, "ln_2.bias"},
      {&Block::fc_w, "mlp.c_fc.weight"},         {&Block::fc_b, "mlp.c_fc.bias"},
      {&Block::mlp_proj_w, "mlp.c_proj.weight"}, {&Block::mlp_proj_b, "mlp.c_proj.bias"}};
  const absl::Status placed =
      RunTorch(absl::StrCat("placing the weights on ", options.device.str()), [&] {
        auto to_device = [&](const std::string& name) {
          return checkpoint.weights.at(name).to(options.device, options.dtype).contiguous();
        };
        // The token embedding is stored with its rows padded to a multiple of
        // 64 (zeros): wte_ is a view of the first V rows; the padded matrix
        // gives the lm_head product aligned leading dimensions.
        const torch::Tensor wte = to_device("wte.weight");
        const int64_t padded = (config.vocab_size + 63) / 64 * 64;
        model->lm_head_ = torch::zeros({padded, config.n_embd}, wte.options());
        model->lm_head_.narrow(0, 0, config.vocab_size).copy_(wte);
        model->wte_ = model->lm_head_.narrow(0, 0, config.vocab_size);
        model->wpe_ = to_device("wpe.weight");
        for (int64_t i = 0; i < config.n_layer; ++i) {
          Block b;
          for (const auto& [member, name] : kBlockTensors) {
            b.*member = to_device(absl::StrCat("h.", i, ".", name));
          }
          model->blocks_.push_back(std::move(b));
        }
        model->ln_f_w_ = to_device("ln_f.weight");
        model->ln_f_b_ = to_device("ln_f.bias");
      });
  if (!placed.ok()) return placed;
  return model;
}

int64_t Gpt2Model::weight_bytes() const {
  int64_t total = lm_head_.nbytes() + wpe_.nbytes() + ln_f_w_.nbytes() + ln_f_b_.nbytes();
  for (const Block& b : blocks_) {
    for (const torch::Tensor* t :
         {&b.ln_1_w, &b.ln_1_b, &b.c_attn_w, &b.c_attn_b, &b.c_proj_w, &b.c_proj_b, &b.ln_2_w,
          &b.ln_2_b, &b.fc_w, &b.fc_b, &b.mlp_proj_w, &b.mlp_proj_b}) {
      total += t->nbytes();
    }
  }
  return total;
}

// Where a forward pass over cache rows writes and reads K/V in the pool,
// the same for every layer: each row writes its T new tokens at positions
// len..len+T-1 (page, offset within it) and reads keys 0..k_len-1 through
// its block table (gathered page by page; a row's keys past its own length
// are masked, which pads its table with page 0).
struct Gpt2Model::CacheAccess {
  KvCache* cache = nullptr;
  torch::Tensor write_pages;    // (B, T) int64
  torch::Tensor write_offsets;  // (B, T) int64
  torch::Tensor read_pages;     // (B * n_pages) int64
  int64_t n_pages = 0;          // pages read per row
  int64_t k_len = 0;            // keys read per row
  bool fresh = false;           // no row has cached tokens: the keys are the new ones
  torch::Tensor mask;           // undefined, (T, k_len) or (B, 1, T, k_len) bool
  // The CUDA paged kernel's inputs (fused attention on a GPU over cached
  // tokens; else undefined): the rows' tables (B, n_pages), and per query
  // (B * T) its table row and the position it attends up to.
  torch::Tensor table, table_rows, query_lens;
  int64_t splits = 1;
};

Gpt2Model::CacheAccess Gpt2Model::PrepareCache(const CacheRows& rows, int64_t B, int64_t T,
                                               torch::Device device) const {
  KvCache& cache = *rows.cache;
  BlockTables& tables = cache.tables();
  const int64_t r0 = rows.row_begin, P = cache.page_size();
  TORCH_CHECK(r0 >= 0 && r0 + B <= cache.batch(), "cache rows ", r0, "..", r0 + B,
              " outside the cache's ", cache.batch());
  std::vector<int64_t> lens(B);
  for (int64_t b = 0; b < B; ++b) {
    lens[b] = cache.length(r0 + b);
    const absl::Status room = tables.PrepareWrite(r0 + b, lens[b], lens[b] + T);
    // A full pool is out of KV memory (RunTorch: RESOURCE_EXHAUSTED).
    TORCH_CHECK_WITH(OutOfMemoryError, room.code() != absl::StatusCode::kResourceExhausted,
                     "KV cache row ", r0 + b, ": ", room.ToString());
    TORCH_CHECK(room.ok(), "KV cache row ", r0 + b, ": ", room.ToString());
  }
  CacheAccess access;
  access.cache = &cache;
  access.k_len = *std::max_element(lens.begin(), lens.end()) + T;
  access.n_pages = PageRun::PagesFor(access.k_len, P);
  std::vector<int64_t> write_pages, write_offsets, read_pages;
  for (int64_t b = 0; b < B; ++b) {
    const PageRun run = tables.run(r0 + b);
    run.AppendPositions(lens[b], lens[b] + T, write_pages, write_offsets);
    run.AppendPages(access.n_pages, 0, read_pages);
  }
  auto on_device = [&](const std::vector<int64_t>& v) {
    return HostToDevice(torch::tensor(v, torch::kLong), device);
  };
  access.write_pages = on_device(write_pages).view({B, T});
  access.write_offsets = on_device(write_offsets).view({B, T});
  access.read_pages = on_device(read_pages);
  const bool uniform =
      std::all_of(lens.begin(), lens.end(), [&](int64_t n) { return n == lens[0]; });
  access.fresh = uniform && lens[0] == 0;
#ifdef NANOSERVE_WITH_CUDA
  // The paged kernel is the decode kernel: each query reads its row's keys
  // on its own, which pays for one query a row (a decode step) and costs
  // T times the key reads for a suffix of T tokens; those gather their
  // pages and run scaled_dot_product_attention (one read of the keys for
  // all of a row's queries).
  if (!access.fresh && T == 1 && device.is_cuda() && options_.attention == AttentionKind::kFused &&
      config_.head_dim() <= cuda::kMaxHeadDim) {
    std::vector<int32_t> table_rows, query_lens;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        table_rows.push_back(static_cast<int32_t>(b));
        query_lens.push_back(static_cast<int32_t>(lens[b] + t));
      }
    }
    auto ints = [&](const std::vector<int32_t>& v) {
      return HostToDevice(torch::tensor(v, torch::kInt), device);
    };
    access.table = access.read_pages.view({B, access.n_pages}).to(torch::kInt).contiguous();
    access.table_rows = ints(table_rows);
    access.query_lens = ints(query_lens);
    access.splits =
        cuda::DecodeAttentionSplits(static_cast<int>(B * T), static_cast<int>(config_.n_head),
                                    static_cast<int>(access.k_len), cuda::MultiprocessorCount());
  }
#endif
  if (uniform) {
    // A fresh prompt's mask is the square causal one: CausalAttention.
    if (T > 1 && !access.fresh) access.mask = CausalMask(lens[0], T, lens[0] + T, device);
  } else {
    // Unequal cached lengths (batched decode, or suffixes after prefixes of
    // different lengths): row b's query t sees keys 0..len_b+t.
    auto opts = torch::TensorOptions(torch::kLong).device(device);
    auto write_pos = on_device(lens).unsqueeze(1) + torch::arange(T, opts);  // (B, T)
    auto key_pos = torch::arange(access.k_len, opts);                        // (Tk,)
    access.mask = (key_pos.view({1, 1, access.k_len}) <= write_pos.unsqueeze(2))
                      .view({B, 1, T, access.k_len});  // (B, 1, T, Tk)
  }
  return access;
}

torch::Tensor Gpt2Model::AttentionForward(const Block& block, int64_t layer, const torch::Tensor& x,
                                          const CacheAccess* cache) const {
  const int64_t B = x.size(0), T = x.size(1), C = config_.n_embd;
  const int64_t H = config_.n_head, D = config_.head_dim();
  const torch::Tensor qkv_all = Linear(x, block.c_attn_w, block.c_attn_b);  // (B, T, 3C)
  auto qkv = qkv_all.split(C, -1);                                          // 3 × (B, T, C)
  auto heads = [&](const torch::Tensor& t) {
    return t.view({B, T, H, D}).transpose(1, 2);  // (B, H, T, D)
  };
  torch::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);

  torch::Tensor keys, values, mask;
  bool causal = false;  // the square causal mask (a prompt without cached tokens)
  if (cache == nullptr) {
    keys = k;
    values = v;
    causal = T > 1;
  } else {
    // Gathers each row's pages of one layer: (B, H, k_len, D).
    auto read = [&](const torch::Tensor& pages) {  // (N, H, P, D)
      return GatherPositions(pages, cache->read_pages.view({B, cache->n_pages}), cache->k_len);
    };
    torch::Tensor k_pages = cache->cache->k_pages(layer);  // (N, H, P, D)
    torch::Tensor v_pages = cache->cache->v_pages(layer);
    ScatterPositions(k_pages, cache->write_pages, cache->write_offsets,
                     k.transpose(1, 2));  // (B, T, H, D)
    ScatterPositions(v_pages, cache->write_pages, cache->write_offsets, v.transpose(1, 2));
#ifdef NANOSERVE_WITH_CUDA
    if (cache->table.defined()) {  // the pages read in place, no gather
      torch::Tensor y = cuda::PagedAttention(qkv_all.reshape({B * T, 3 * C}), k_pages, v_pages,
                                             cache->table, cache->table_rows, cache->query_lens,
                                             cache->splits);  // (B * T, C)
      return Linear(y.view({B, T, C}), block.c_proj_w, block.c_proj_b);
    }
#endif
    // A fresh prompt attends to its own new keys only: no gather.
    keys = cache->fresh ? k : read(k_pages);
    values = cache->fresh ? v : read(v_pages);
    mask = cache->mask;
    causal = cache->fresh && T > 1;
  }
  torch::Tensor y = causal ? CausalAttention(options_.attention, q, keys, values)
                           : Attention(options_.attention, q, keys, values, mask);  // (B, H, T, D)
  y = y.transpose(1, 2).contiguous().view({B, T, C});
  return Linear(y, block.c_proj_w, block.c_proj_b);
}

torch::Tensor Gpt2Model::MlpForward(const Block& block, const torch::Tensor& x) const {
  auto h = torch::gelu(Linear(x, block.fc_w, block.fc_b), "tanh");  // (B, T, 4C)
  return Linear(h, block.mlp_proj_w, block.mlp_proj_b);             // (B, T, C)
}

torch::Tensor Gpt2Model::Forward(const torch::Tensor& ids, const torch::Tensor& positions,
                                 const CacheRows& rows) const {
  torch::InferenceMode guard;
  const int64_t B = ids.size(0), T = ids.size(1), C = config_.n_embd;
  auto dev_ids = HostToDevice(ids, options_.device);
  auto dev_pos = HostToDevice(positions, options_.device);
  torch::Tensor x = wte_.index_select(0, dev_ids.reshape(-1)) +
                    wpe_.index_select(0, dev_pos.reshape(-1));  // (B*T, C)
  x = x.view({B, T, C});
  std::optional<CacheAccess> cache;
  if (rows.cache != nullptr) cache = PrepareCache(rows, B, T, options_.device);
  const double eps = config_.layer_norm_epsilon;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& b = blocks_[l];
    x = x + AttentionForward(b, static_cast<int64_t>(l),
                             torch::layer_norm(x, {C}, b.ln_1_w, b.ln_1_b, eps),
                             cache ? &*cache : nullptr);
    x = x + MlpForward(b, torch::layer_norm(x, {C}, b.ln_2_w, b.ln_2_b, eps));
  }
  if (rows.cache != nullptr) {
    for (int64_t r = rows.row_begin; r < rows.row_begin + B; ++r) {
      rows.cache->set_length(r, rows.cache->length(r) + T);
    }
  }
  return torch::layer_norm(x, {C}, ln_f_w_, ln_f_b_, eps);  // (B, T, C)
}

torch::Tensor Gpt2Model::Logits(const torch::Tensor& hidden) const {
  torch::InferenceMode guard;
  return torch::matmul(hidden, wte_.t()).to(torch::kFloat);  // (..., V)
}

}  // namespace nanoserve
