#include "engine/attention.h"

#include <cmath>
#include <limits>

#include <torch/version.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#if TORCH_VERSION_MAJOR >= 2
#define NANOSERVE_HAVE_SDPA 1
#endif
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#include <ATen/Context.h>
#define NANOSERVE_HAVE_CUDNN_SDPA 1
#endif

namespace nanoserve {

bool FusedAttentionAvailable() {
#ifdef NANOSERVE_HAVE_SDPA
  return true;
#else
  return false;
#endif
}

void PrepareFusedAttention() {
#ifdef NANOSERVE_HAVE_CUDNN_SDPA
  // cuDNN's backend builds an execution plan the first time it sees a shape:
  // tens of milliseconds for every new key length, which a decode loop meets
  // at every step. Flash and memory-efficient attention have no such cost.
  at::globalContext().setSDPUseCuDNN(false);
#endif
}

absl::StatusOr<AttentionKind> ParseAttentionKind(absl::string_view name) {
  if (name == "naive") return AttentionKind::kNaive;
  if (name == "fused") {
    if (!FusedAttentionAvailable()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--attention fused needs LibTorch 2.x (scaled_dot_product_attention); this build has ",
          TORCH_VERSION));
    }
    return AttentionKind::kFused;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown attention '", name, "' (expected naive or fused)"));
}

std::string AttentionKindName(AttentionKind kind) {
  return kind == AttentionKind::kNaive ? "naive" : "fused";
}

torch::Tensor CausalMask(int64_t q_offset, int64_t q_len, int64_t k_len, torch::Device device) {
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  torch::Tensor q_pos = torch::arange(q_offset, q_offset + q_len, opts).unsqueeze(1);  // (Tq, 1)
  torch::Tensor k_pos = torch::arange(0, k_len, opts).unsqueeze(0);                    // (1, Tk)
  return k_pos <= q_pos;                                                               // (Tq, Tk)
}

namespace {

torch::Tensor NaiveAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& mask) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor att = torch::matmul(q, k.transpose(-2, -1)) * scale;  // (B, H, Tq, Tk)
  if (mask.defined()) {
    att = att.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  }
  att = torch::softmax(att, -1);
  return torch::matmul(att, v);  // (B, H, Tq, D)
}

}  // namespace

torch::Tensor Attention(AttentionKind kind, const torch::Tensor& q, const torch::Tensor& k,
                        const torch::Tensor& v, const torch::Tensor& mask) {
#ifdef NANOSERVE_HAVE_SDPA
  if (kind == AttentionKind::kFused) {
    c10::optional<torch::Tensor> attn_mask;
    if (mask.defined()) attn_mask = mask;
    return at::scaled_dot_product_attention(q, k, v, attn_mask);
  }
#endif
  return NaiveAttention(q, k, v, mask);
}

torch::Tensor CausalAttention(AttentionKind kind, const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v) {
  TORCH_CHECK(q.size(-2) == k.size(-2), "causal attention needs as many queries (", q.size(-2),
              ") as keys (", k.size(-2), ")");
#ifdef NANOSERVE_HAVE_SDPA
  if (kind == AttentionKind::kFused) {
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/c10::nullopt,
                                            /*dropout_p=*/0.0, /*is_causal=*/true);
  }
#endif
  if (q.size(-2) == 1) return NaiveAttention(q, k, v, torch::Tensor());
  return NaiveAttention(q, k, v, CausalMask(0, q.size(-2), k.size(-2), q.device()));
}

}  // namespace nanoserve
