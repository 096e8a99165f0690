// Causal self-attention kernels: the explicit form studied in class ("naive")
// and LibTorch's fused scaled_dot_product_attention ("fused", LibTorch 2.x).
#ifndef NANOSERVE_ENGINE_ATTENTION_H_
#define NANOSERVE_ENGINE_ATTENTION_H_

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

enum class AttentionKind { kNaive, kFused };

// "naive" or "fused". INVALID_ARGUMENT otherwise, and for "fused" when this
// LibTorch has no scaled_dot_product_attention (before 2.0).
absl::StatusOr<AttentionKind> ParseAttentionKind(absl::string_view name);
std::string AttentionKindName(AttentionKind kind);
bool FusedAttentionAvailable();

// Chooses scaled_dot_product_attention's backends for serving: every
// backend but cuDNN's, which pays a per-shape plan cost (see attention.cc).
// Process-wide; Gpt2Model::Create calls it for kFused models.
void PrepareFusedAttention();

// The causal mask for `q_len` queries at absolute positions
// q_offset..q_offset+q_len-1 over `k_len` keys at positions 0..k_len-1:
// mask[i][j] is true where query i may attend key j (j <= q_offset + i).
// Shape (q_len, k_len), bool, on `device`.
//  - no cache:       q_offset = 0, q_len = k_len      -> square, lower triangular
//  - chunk on cache: q_offset = P, k_len = P + q_len  -> rectangular (q_len, P + q_len)
//  - one new row:    q_len = 1, q_offset = k_len - 1  -> all true; callers skip it
// REQUIRES: q_len >= 1, q_offset >= 0, k_len >= q_offset + q_len.
torch::Tensor CausalMask(int64_t q_offset, int64_t q_len, int64_t k_len,
                         torch::Device device = torch::kCPU);

// softmax(q kᵀ / sqrt(D) masked) · v.
// q: (B, H, Tq, D); k, v: (B, H, Tk, D); mask: undefined (attend to all
// keys), or bool broadcastable to (B, H, Tq, Tk), true = attend.
// Returns (B, H, Tq, D) in q's dtype.
torch::Tensor Attention(AttentionKind kind, const torch::Tensor& q, const torch::Tensor& k,
                        const torch::Tensor& v, const torch::Tensor& mask);

// The same with the square causal mask (query i sees keys 0..i; Tq == Tk),
// given as a flag rather than a tensor: fused attention then runs
// scaled_dot_product_attention with is_causal, whose flash kernel takes no
// mask (a bool mask sends it to a slower backend); naive builds CausalMask.
torch::Tensor CausalAttention(AttentionKind kind, const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v);

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_ATTENTION_H_
