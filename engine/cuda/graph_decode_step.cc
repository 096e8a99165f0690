#include "engine/cuda/graph_decode_step.h"

#include <algorithm>
#include <utility>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>

#include "absl/strings/str_cat.h"
#include "engine/cuda/fused_ops.h"
#include "engine/cuda/kernels.h"
#include "engine/prefill.h"
#include "kv_cache/shared_prefix_groups.h"

namespace nanoserve::cuda {

absl::Status GraphDecodeStep::CanRun(const Gpt2Model& model, const KvCache& cache) {
  const ModelOptions& options = model.options();
  const Gpt2Config& config = model.config();
  if (!options.device.is_cuda()) {
    return absl::InvalidArgumentError("the cuda-graph decode step needs the model on a GPU");
  }
  if (options.dtype != torch::kFloat && options.dtype != torch::kBFloat16 &&
      options.dtype != torch::kHalf) {
    return absl::InvalidArgumentError("the cuda-graph decode step takes fp32, bf16 or fp16");
  }
  if (config.head_dim() > kMaxHeadDim || config.n_embd > kMaxLayerNormCols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the cuda-graph decode step takes head sizes up to ", kMaxHeadDim, " and widths up to ",
        kMaxLayerNormCols, ", not ", config.head_dim(), " and ", config.n_embd));
  }
  const torch::Tensor& pool = cache.pool().storage();
  if (pool.device() != model.wte().device() || pool.scalar_type() != options.dtype) {
    return absl::InvalidArgumentError("the KV cache is not on the model's device in its dtype");
  }
  return absl::OkStatus();
}

GraphDecodeStep::GraphDecodeStep(const Gpt2Model* model, KvCache* cache,
                                 GraphDecodeStepOptions options)
    : model_(model),
      cache_(cache),
      options_(options),
      side_(c10::cuda::getStreamFromPool(/*isHighPriority=*/false,
                                         model->options().device.index() < 0
                                             ? c10::cuda::current_device()
                                             : model->options().device.index())),
      pool_(at::cuda::graph_pool_handle()) {
  const int64_t rows = cache->batch();
  for (int64_t b = 1; b < rows; b *= 2) buckets_.push_back(b);
  buckets_.push_back(rows);
  const int sms = MultiprocessorCount();
  for (int64_t b : buckets_) {
    splits_[b] =
        DecodeAttentionSplits(static_cast<int>(b), static_cast<int>(model->config().n_head),
                              static_cast<int>(cache->capacity()), sms);
  }
  // Tokens, lengths, the block tables, then (shared-prefix attention) each
  // row's shared keys and the groups: one buffer, one copy a step.
  const int64_t width = cache->tables().max_pages();
  if (options_.shared_prefix_attention &&
      !SharedPrefixAttentionTakes(model->options().dtype, model->config().head_dim())) {
    options_.shared_prefix_attention = false;
  }
  // Groups of two rows at least; the shared pass's grid has a block row per
  // group, most of them idle (they exit at once): at most 8, and the rows of
  // groups past them attend all their keys themselves.
  const int64_t max_groups = std::min<int64_t>((rows + 1) / 2, 8);
  const int64_t size =
      rows * (2 + width) +
      (options_.shared_prefix_attention ? rows + max_groups * kSharedPrefixGroupInts : 0);
  auto int_opts = torch::TensorOptions().dtype(torch::kInt);
  host_inputs_ = torch::zeros({size}, int_opts.pinned_memory(true));
  inputs_ = torch::zeros({size}, int_opts.device(model->options().device));
  steps_ = inputs_.narrow(0, 0, 2 * rows).view({2, rows});
  tables_ = inputs_.narrow(0, 2 * rows, rows * width).view({rows, width});
  if (options_.shared_prefix_attention) {
    key_begin_ = inputs_.narrow(0, rows * (2 + width), rows);
    groups_ = inputs_.narrow(0, rows * (3 + width), max_groups * kSharedPrefixGroupInts)
                  .view({max_groups, kSharedPrefixGroupInts});
    // Ranges of about 256 shared keys at full capacity, at most 16.
    shared_splits_ = std::clamp<int64_t>((cache->capacity() + 255) / 256, 1, 16);
  }
  host_tokens_ =
      torch::zeros({rows}, torch::TensorOptions().dtype(torch::kLong).pinned_memory(true));
  if (options_.graph_prefill) prefill_ = std::make_unique<GraphPrefill>(model, cache);
  if (options_.fused_matvec) {
    const int64_t c = model->config().n_embd;
    matvec_scratch_ = MakeMatvecScratch(std::min(rows, kMatvecMaxBucket),
                                        {{c, 3 * c}, {c, c}, {c, 4 * c}, {4 * c, c}},
                                        model->options().dtype, model->options().device);
  }
}

int64_t GraphDecodeStep::BucketFor(int64_t rows) const {
  return *std::lower_bound(buckets_.begin(), buckets_.end(), rows);
}

void GraphDecodeStep::StageInputs(const std::vector<int64_t>& tokens, int64_t bucket) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t rows = cache_->batch();
  const int64_t vocab = model_->config().vocab_size;
  const int64_t limit = std::min(cache_->capacity(), model_->config().n_positions);
  BlockTables& tables = cache_->tables();
  const int64_t width = tables.max_pages();
  inputs_copied_.synchronize();  // the previous step's copy has read host_inputs_
  int32_t* host = host_inputs_.data_ptr<int32_t>();
  int32_t* host_tables = host + 2 * rows;
  for (int64_t r = 0; r < bucket; ++r) {
    const int64_t length = cache_->length(r);
    if (r < n) {
      TORCH_CHECK(tokens[r] >= 0 && tokens[r] < vocab, "token ", tokens[r], " of row ", r,
                  " is outside the vocabulary");
      TORCH_CHECK(length < limit, "KV cache row ", r, " is full (", length, " tokens)");
      // The page that takes the new token: allocated (or copied, if shared).
      const absl::Status room = tables.PrepareWrite(r, length, length + 1);
      TORCH_CHECK_WITH(OutOfMemoryError, room.code() != absl::StatusCode::kResourceExhausted,
                       "KV cache row ", r, ": ", room.ToString());
      TORCH_CHECK(room.ok(), "KV cache row ", r, ": ", room.ToString());
    }
    host[r] = r < n ? static_cast<int32_t>(tokens[r]) : 0;
    host[rows + r] = static_cast<int32_t>(std::min(length, limit - 1));
    // Rows past the caller's and pages past a row's own read and write the
    // scratch page.
    const std::vector<int32_t>& pages = tables.pages(r);
    int32_t* table = host_tables + r * width;
    std::fill(table, table + width, tables.scratch_page());
    std::copy(pages.begin(), pages.end(), table);
  }
  if (options_.shared_prefix_attention) {
    shared_row_steps_ += StageGroups(std::min<int64_t>(n, bucket), host + rows * (2 + width),
                                     host + rows * (3 + width));
  }
  inputs_.copy_(host_inputs_, /*non_blocking=*/true);
  inputs_copied_.record();
}

int64_t GraphDecodeStep::StageGroups(int64_t n, int32_t* key_begin, int32_t* groups) const {
  const BlockTables& tables = cache_->tables();
  const int64_t max_groups = groups_.size(0);
  std::fill(key_begin, key_begin + cache_->batch(), 0);
  std::fill(groups, groups + max_groups * kSharedPrefixGroupInts, 0);
  std::vector<const std::vector<int32_t>*> pages;
  std::vector<int64_t> lengths;
  for (int64_t r = 0; r < n; ++r) {
    pages.push_back(&tables.pages(r));
    lengths.push_back(cache_->length(r));
  }
  SharedPrefixGroupLimits limits;
  limits.page_size = tables.page_size();
  limits.max_rows = kSharedPrefixGroupRows;
  limits.max_groups = max_groups;
  limits.min_keys = 64;  // one of the shared pass's key tiles
  int64_t grouped = 0;
  int32_t* group = groups;
  for (const SharedPrefixGroup& g : SharedPrefixGroups(pages, lengths, limits)) {
    group[0] = static_cast<int32_t>(g.keys);
    group[1] = static_cast<int32_t>(g.rows.size());
    for (size_t k = 0; k < g.rows.size(); ++k) {
      group[2 + k] = static_cast<int32_t>(g.rows[k]);
      key_begin[g.rows[k]] = static_cast<int32_t>(g.keys);
    }
    grouped += static_cast<int64_t>(g.rows.size());
    group += kSharedPrefixGroupInts;
  }
  return grouped;
}

GraphDecodeStep::Outputs GraphDecodeStep::Forward(int64_t bucket) {
  const Gpt2Config& config = model_->config();
  const double eps = config.layer_norm_epsilon;
  const auto& blocks = model_->blocks();
  torch::Tensor ids = steps_[0].narrow(0, 0, bucket);      // (bucket,)
  torch::Tensor lengths = steps_[1].narrow(0, 0, bucket);  // (bucket,): also the positions
  torch::Tensor x = torch::empty({bucket, config.n_embd}, model_->wte().options());  // residual
  torch::Tensor h = EmbedLayerNorm(model_->wte(), model_->wpe(), ids, lengths, blocks[0].ln_1_w,
                                   blocks[0].ln_1_b, eps, x);  // (bucket, C)
  const int64_t splits = splits_.at(bucket);
  SharedPrefix shared;
  if (options_.shared_prefix_attention) {
    shared.groups = groups_;
    shared.key_begin = key_begin_.narrow(0, 0, bucket);
    shared.splits = shared_splits_;
  }
  const bool matvec = options_.fused_matvec && bucket <= kMatvecMaxBucket && config.n_embd % 8 == 0;
  for (size_t l = 0; l < blocks.size(); ++l) {
    const Gpt2Model::Block& b = blocks[l];
    const bool last = l + 1 == blocks.size();
    const torch::Tensor& next_w = last ? model_->ln_f_w() : blocks[l + 1].ln_1_w;
    const torch::Tensor& next_b = last ? model_->ln_f_b() : blocks[l + 1].ln_1_b;
    torch::Tensor k_pages = cache_->k_pages(static_cast<int64_t>(l));
    torch::Tensor v_pages = cache_->v_pages(static_cast<int64_t>(l));
    if (matvec && options_.fused_layer_norm) {
      // LN1 and LN2 inside the products that read them; the residual adds
      // land in x itself. (Layer 0's h from the embedding goes unused.)
      const torch::Tensor none;
      torch::Tensor qkv = Matvec(x, b.c_attn_w, b.c_attn_b, false, none, matvec_scratch_,
                                 torch::Tensor(), {b.ln_1_w, b.ln_1_b, eps});
      torch::Tensor y = DecodeAttention(qkv, k_pages, v_pages, tables_, lengths, splits, true,
                                        kAutoMinChunk, shared);
      Matvec(y, b.c_proj_w, b.c_proj_b, false, x, matvec_scratch_, x);
      torch::Tensor f = Matvec(x, b.fc_w, b.fc_b, /*gelu=*/true, none, matvec_scratch_,
                               torch::Tensor(), {b.ln_2_w, b.ln_2_b, eps});
      Matvec(f, b.mlp_proj_w, b.mlp_proj_b, false, x, matvec_scratch_, x);
      if (last) h = AddLayerNorm(x, none, next_w, next_b, eps);
      continue;
    }
    if (matvec) {
      // The residual adds land in x itself; the LayerNorms then add nothing.
      const torch::Tensor none;
      torch::Tensor qkv = Matvec(h, b.c_attn_w, b.c_attn_b, false, none, matvec_scratch_);
      torch::Tensor y = DecodeAttention(qkv, k_pages, v_pages, tables_, lengths, splits, true,
                                        kAutoMinChunk, shared);
      Matvec(y, b.c_proj_w, b.c_proj_b, false, x, matvec_scratch_, x);
      h = AddLayerNorm(x, none, b.ln_2_w, b.ln_2_b, eps);
      torch::Tensor f = Matvec(h, b.fc_w, b.fc_b, /*gelu=*/true, none, matvec_scratch_);
      Matvec(f, b.mlp_proj_w, b.mlp_proj_b, false, x, matvec_scratch_, x);
      h = AddLayerNorm(x, none, next_w, next_b, eps);
      continue;
    }
    torch::Tensor qkv = torch::addmm(b.c_attn_b, h, b.c_attn_w);  // (bucket, 3C)
    torch::Tensor y = DecodeAttention(qkv, k_pages, v_pages, tables_, lengths, splits, true,
                                      kAutoMinChunk, shared);
    h = AddLayerNorm(x, torch::addmm(b.c_proj_b, y, b.c_proj_w), b.ln_2_w, b.ln_2_b, eps);
    // Bias + GELU (tanh) in cuBLASLt's epilogue where it applies.
    torch::Tensor f = at::_addmm_activation(b.fc_b, h, b.fc_w, 1, 1, /*use_gelu=*/true);
    h = AddLayerNorm(x, torch::addmm(b.mlp_proj_b, f, b.mlp_proj_w), next_w, next_b, eps);
  }
  // The lm_head over the vocabulary padded to a multiple of 64 (aligned
  // shapes for cuBLAS: 5x faster at batch 64 than over 50257 rows).
  torch::Tensor padded = torch::mm(h, model_->lm_head().t());  // (bucket, V64)
  Outputs out;
  out.logits = torch::empty({bucket, config.vocab_size}, padded.options().dtype(torch::kFloat));
  out.logits.copy_(padded.narrow(1, 0, config.vocab_size));  // (bucket, V) fp32
  out.tokens = ArgmaxRows(out.logits);
  return out;
}

GraphDecodeStep::Outputs GraphDecodeStep::Capture(int64_t bucket) {
  c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream();
  at::cuda::CUDAEvent staged;
  staged.record(current);
  staged.block(side_);
  Outputs eager;
  {
    c10::cuda::CUDAStreamGuard guard(side_);
    eager = Forward(bucket);
    Graph g;
    g.graph = std::make_unique<at::cuda::CUDAGraph>();
    g.graph->capture_begin(pool_, cudaStreamCaptureModeThreadLocal);
    g.outputs = Forward(bucket);
    g.graph->capture_end();
    graphs_[bucket] = std::move(g);
  }
  at::cuda::CUDAEvent done;
  done.record(side_);
  done.block(current);
  eager.logits.record_stream(current);
  eager.tokens.record_stream(current);
  return eager;
}

std::vector<torch::Tensor> GraphDecodeStep::Prefill(const std::vector<std::vector<int>>& prompts,
                                                    int64_t row_begin, int64_t chunk) {
  if (prefill_ == nullptr || chunk > 0) {
    return PrefillBatch(*model_, *cache_, prompts, chunk, row_begin);
  }
  return prefill_->Run(prompts, row_begin);
}

void GraphDecodeStep::Prepare() {
  torch::InferenceMode guard;
  if (prefill_ != nullptr) prefill_->Prepare();
  for (int64_t bucket : buckets_) {
    if (graphs_.count(bucket) > 0) continue;
    StageInputs({}, bucket);
    Capture(bucket);
  }
  c10::cuda::getCurrentCUDAStream().synchronize();
}

double GraphDecodeStep::ReplayMicros(int64_t rows, int replays) {
  at::cuda::CUDAGraph& graph = *graphs_.at(BucketFor(rows)).graph;
  graph.replay();
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  start.record(stream);
  for (int i = 0; i < replays; ++i) graph.replay();
  stop.record(stream);
  stop.synchronize();
  return start.elapsed_time(stop) * 1000.0 / replays;
}

torch::Tensor GraphDecodeStep::Run(const std::vector<int64_t>& tokens,
                                   std::vector<int64_t>* greedy) {
  torch::InferenceMode guard;
  const int64_t n = static_cast<int64_t>(tokens.size());
  TORCH_CHECK(n >= 1 && n <= cache_->batch(), "decode step of ", n, " rows over a cache of ",
              cache_->batch());
  const int64_t bucket = BucketFor(n);
  StageInputs(tokens, bucket);
  Outputs out;
  auto it = graphs_.find(bucket);
  if (it == graphs_.end()) {
    out = Capture(bucket);
  } else {
    it->second.graph->replay();
    out = it->second.outputs;
  }
  if (greedy != nullptr) {
    torch::Tensor host = host_tokens_.narrow(0, 0, bucket);
    host.copy_(out.tokens, /*non_blocking=*/true);
    c10::cuda::getCurrentCUDAStream().synchronize();
    const int64_t* best = host.data_ptr<int64_t>();
    greedy->assign(best, best + n);
  }
  for (int64_t r = 0; r < n; ++r) cache_->set_length(r, cache_->length(r) + 1);
  return out.logits.narrow(0, 0, n);
}

}  // namespace nanoserve::cuda
