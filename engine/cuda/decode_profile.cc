#include "engine/cuda/decode_profile.h"

#include <functional>
#include <utility>

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "absl/strings/str_cat.h"
#include "base/torch_status.h"
#include "engine/cuda/fused_ops.h"
#include "engine/cuda/graph_decode_step.h"
#include "engine/cuda/kernels.h"

namespace nanoserve::cuda {
namespace {

// Device microseconds of one run of `op`, from a graph of `reps` runs.
double GraphMicros(const std::function<void()>& op, int reps) {
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  c10::cuda::CUDAStreamGuard guard(side);
  op();  // warm-up (cuBLAS on this stream)
  at::cuda::CUDAGraph graph;
  graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
  for (int i = 0; i < reps; ++i) op();
  graph.capture_end();
  graph.replay();
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  start.record(side);
  constexpr int kReplays = 5;
  for (int i = 0; i < kReplays; ++i) graph.replay();
  stop.record(side);
  stop.synchronize();
  return start.elapsed_time(stop) * 1000.0 / (kReplays * reps);
}

}  // namespace

absl::StatusOr<std::vector<OpTiming>> ProfileDecodeStep(const Gpt2Model& model, KvCache& cache,
                                                        int64_t rows, int reps) {
  if (absl::Status s = GraphDecodeStep::CanRun(model, cache); !s.ok()) return s;
  return TorchResult("profiling the decode step", [&]() -> std::vector<OpTiming> {
    torch::InferenceMode guard;
    const Gpt2Config& config = model.config();
    const auto& b = model.blocks()[0];
    const int64_t layers = config.n_layer, C = config.n_embd;
    const double eps = config.layer_norm_epsilon;
    auto int_opts = torch::TensorOptions().dtype(torch::kInt).device(model.wte().device());
    std::vector<int32_t> lens(cache.lengths().begin(), cache.lengths().begin() + rows);
    for (int64_t r = 0; r < rows; ++r) {  // room for the K/V the attention writes
      const absl::Status room = cache.tables().PrepareWrite(r, lens[r], lens[r] + 1);
      TORCH_CHECK(room.ok(), room.ToString());
    }
    torch::Tensor lengths = torch::tensor(lens, torch::kInt).to(int_opts.device());
    torch::Tensor table =
        cache.tables().TableTensor(rows, cache.tables().max_pages()).to(int_opts.device());
    torch::Tensor k_pages = cache.k_pages(0), v_pages = cache.v_pages(0);
    torch::Tensor ids = torch::zeros({rows}, int_opts);
    torch::Tensor x = torch::empty({rows, C}, model.wte().options());
    torch::Tensor h =
        EmbedLayerNorm(model.wte(), model.wpe(), ids, lengths, b.ln_1_w, b.ln_1_b, eps, x);
    torch::Tensor qkv = torch::addmm(b.c_attn_b, h, b.c_attn_w);
    const int64_t splits =
        DecodeAttentionSplits(static_cast<int>(rows), static_cast<int>(config.n_head),
                              static_cast<int>(cache.capacity()), MultiprocessorCount());
    torch::Tensor y = DecodeAttention(qkv, k_pages, v_pages, table, lengths, splits);
    torch::Tensor a = torch::addmm(b.c_proj_b, y, b.c_proj_w);
    torch::Tensor f = at::_addmm_activation(b.fc_b, h, b.fc_w, 1, 1, true);
    torch::Tensor m = torch::addmm(b.mlp_proj_b, f, b.mlp_proj_w);
    torch::Tensor logits_lp = torch::mm(h, model.lm_head().t());
    torch::Tensor logits =
        torch::empty({rows, config.vocab_size}, h.options().dtype(torch::kFloat));
    std::vector<OpTiming> out;
    auto add = [&](const std::string& name, int64_t per_step, const std::function<void()>& op) {
      out.push_back({name, per_step, per_step * GraphMicros(op, reps)});
    };
    add("embedding + LayerNorm (fused)", 1, [&] {
      EmbedLayerNorm(model.wte(), model.wpe(), ids, lengths, b.ln_1_w, b.ln_1_b, eps, x);
    });
    add("qkv: addmm (cuBLAS)", layers, [&] { torch::addmm(b.c_attn_b, h, b.c_attn_w); });
    add("decode attention (fused, paged, appends K/V)", layers,
        [&] { DecodeAttention(qkv, k_pages, v_pages, table, lengths, splits); });
    add("  the same, one value element a thread (before 16-byte loads)", layers, [&] {
      DecodeAttention(qkv, k_pages, v_pages, table, lengths, splits, /*vector_values=*/false);
    });
    for (int64_t min_chunk : {1, 32, 64, 128}) {
      add(absl::StrCat("  the same, key ranges of ", min_chunk, " keys at least",
                       min_chunk == 1 ? " (before the minimum)" : ""),
          layers, [&] {
            DecodeAttention(qkv, k_pages, v_pages, table, lengths, splits,
                            /*vector_values=*/true, min_chunk);
          });
    }
    add("attention proj: addmm (cuBLAS)", layers, [&] { torch::addmm(b.c_proj_b, y, b.c_proj_w); });
    add("residual add + LayerNorm (fused)", 2 * layers,
        [&] { AddLayerNorm(x, a, b.ln_2_w, b.ln_2_b, eps); });
    add("mlp fc + bias + GELU: _addmm_activation", layers,
        [&] { at::_addmm_activation(b.fc_b, h, b.fc_w, 1, 1, true); });
    add("mlp proj: addmm (cuBLAS)", layers, [&] { torch::addmm(b.mlp_proj_b, f, b.mlp_proj_w); });
    add("lm_head: mm (cuBLAS, vocabulary padded to 64)", 1,
        [&] { torch::mm(h, model.lm_head().t()); });
    add("logits to fp32", 1, [&] { logits.copy_(logits_lp.narrow(1, 0, config.vocab_size)); });
    add("argmax (fused)", 1, [&] { ArgmaxRows(logits); });
    double sum = 0;
    for (const OpTiming& t : out)
      sum += t.op.rfind("  ", 0) == 0 ? 0 : t.us;  // not the comparisons
    out.push_back({"sum of the above", 0, sum});
    // The whole step, as the engine replays it.
    GraphDecodeStep step(&model, &cache);
    std::vector<int64_t> tokens(rows, 0);
    const std::vector<int64_t> saved(cache.lengths().begin(), cache.lengths().end());
    step.Run(tokens, nullptr);  // captures this bucket
    for (int64_t r = 0; r < rows; ++r) cache.set_length(r, saved[r]);
    // The step's graph replayed alone, back to back (inputs already staged).
    out.push_back({"step: graph replay (device)", 1, step.ReplayMicros(rows, 20)});
    for (int64_t r = 0; r < rows; ++r) cache.set_length(r, saved[r]);
    return out;
  });
}

}  // namespace nanoserve::cuda
