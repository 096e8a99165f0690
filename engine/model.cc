#include "engine/model.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kv_store/torch_status.h"

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

torch::Tensor Gpt2Model::AttentionForward(const Block& block, int64_t layer, const torch::Tensor& x,
                                          const CacheRows& rows) const {
  const int64_t B = x.size(0), T = x.size(1), C = config_.n_embd;
  const int64_t H = config_.n_head, D = config_.head_dim();
  auto qkv = Linear(x, block.c_attn_w, block.c_attn_b).split(C, -1);  // 3 × (B, T, C)
  auto heads = [&](const torch::Tensor& t) {
    return t.view({B, T, H, D}).transpose(1, 2);  // (B, H, T, D)
  };
  torch::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);

  torch::Tensor keys, values, mask;
  if (rows.cache == nullptr) {
    keys = k;
    values = v;
    if (T > 1) mask = CausalMask(0, T, T, x.device());  // (T, T)
  } else {
    KvCache& cache = *rows.cache;
    const auto& lens = cache.lengths();
    const int64_t r0 = rows.row_begin;
    torch::Tensor k_rows = cache.k(layer).narrow(0, r0, B);  // (B, H, cap, D)
    torch::Tensor v_rows = cache.v(layer).narrow(0, r0, B);
    const int64_t p0 = lens[r0];
    const bool uniform =
        std::all_of(lens.begin() + r0, lens.begin() + r0 + B, [&](int64_t n) { return n == p0; });
    if (uniform) {
      k_rows.narrow(2, p0, T).copy_(k);
      v_rows.narrow(2, p0, T).copy_(v);
      keys = k_rows.narrow(2, 0, p0 + T);  // (B, H, P+T, D)
      values = v_rows.narrow(2, 0, p0 + T);
      if (T > 1) mask = CausalMask(p0, T, p0 + T, x.device());  // (T, P+T)
    } else {
      // Unequal cached lengths (batched decode, or suffixes after prefixes
      // of different lengths): row b writes its T keys at len_b..len_b+T-1
      // and its query t sees keys 0..len_b+t.
      std::vector<int64_t> row_lens(lens.begin() + r0, lens.begin() + r0 + B);
      const int64_t k_len = *std::max_element(row_lens.begin(), row_lens.end()) + T;
      TORCH_CHECK(k_len <= cache.capacity(), "KV cache rows overflow: ", k_len, " > ",
                  cache.capacity());
      auto opts = torch::TensorOptions(torch::kLong).device(x.device());
      auto len_t = torch::tensor(row_lens, torch::kLong).to(x.device());  // (B,)
      auto write_pos = len_t.unsqueeze(1) + torch::arange(T, opts);       // (B, T)
      auto row_idx = torch::arange(B, opts).unsqueeze(1);                 // (B, 1)
      using torch::indexing::Slice;
      k_rows.index_put_({row_idx, Slice(), write_pos}, k.transpose(1, 2));  // (B, T, H, D)
      v_rows.index_put_({row_idx, Slice(), write_pos}, v.transpose(1, 2));
      keys = k_rows.narrow(2, 0, k_len);  // (B, H, Tk, D)
      values = v_rows.narrow(2, 0, k_len);
      auto key_pos = torch::arange(k_len, opts);  // (Tk,)
      mask = (key_pos.view({1, 1, k_len}) <= write_pos.unsqueeze(2))
                 .view({B, 1, T, k_len});  // (B, 1, T, Tk)
    }
  }
  torch::Tensor y = Attention(options_.attention, q, keys, values, mask);  // (B, H, T, D)
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
  auto dev_ids = ids.to(options_.device);
  auto dev_pos = positions.to(options_.device);
  torch::Tensor x = wte_.index_select(0, dev_ids.reshape(-1)) +
                    wpe_.index_select(0, dev_pos.reshape(-1));  // (B*T, C)
  x = x.view({B, T, C});
  const double eps = config_.layer_norm_epsilon;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& b = blocks_[l];
    x = x + AttentionForward(b, static_cast<int64_t>(l),
                             torch::layer_norm(x, {C}, b.ln_1_w, b.ln_1_b, eps), rows);
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
