#include "engine/cuda/graph_prefill.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "absl/status/status.h"
#include "engine/cuda/fused_ops.h"
#include "engine/cuda/kernels.h"
#include "engine/prefill.h"

namespace nanoserve::cuda {
namespace {

// $NANOSERVE_PREFILL_ATTENTION picks the tensor-core prefill attention
// kernel for timing them against each other in one build: "wmma",
// "registers", "fma"; unset, empty or "auto": PrefillAttentionVersion::kAuto.
PrefillAttentionVersion PrefillAttentionVersionFromEnv() {
  const char* env = std::getenv("NANOSERVE_PREFILL_ATTENTION");
  const std::string value = env == nullptr ? "" : env;
  if (value == "wmma") return PrefillAttentionVersion::kWmma;
  if (value == "registers") return PrefillAttentionVersion::kRegisters;
  if (value == "fma") return PrefillAttentionVersion::kFma;
  if (!value.empty() && value != "auto") {
    std::fprintf(stderr,
                 "NANOSERVE_PREFILL_ATTENTION=%s is not auto, wmma, registers or fma: auto\n",
                 value.c_str());
  }
  return PrefillAttentionVersion::kAuto;
}

}  // namespace

GraphPrefill::GraphPrefill(const Gpt2Model* model, KvCache* cache, int64_t max_pass_tokens,
                           int64_t eager_above_pairs)
    : model_(model),
      cache_(cache),
      eager_above_pairs_(
          eager_above_pairs != kDefaultEagerAbove               ? eager_above_pairs
          : model->options().attention != AttentionKind::kFused ? 0
          : PrefillAttentionOnTensorCores(model->options().dtype, model->config().head_dim())
              ? kTensorCoreEagerAbovePairs
              : kFusedEagerAbovePairs),
      side_(c10::cuda::getStreamFromPool(/*isHighPriority=*/false,
                                         model->options().device.index() < 0
                                             ? c10::cuda::current_device()
                                             : model->options().device.index())),
      pool_(at::cuda::graph_pool_handle()) {
  max_rows_ = cache->batch();
  width_ = cache->tables().max_pages();
  const int64_t most = std::min(
      max_pass_tokens, max_rows_ * std::min(cache->capacity(), model->config().n_positions));
  for (int64_t b = 16; b < most; b *= 2) {
    buckets_.push_back(b);
    if (b + b / 2 < most) buckets_.push_back(b + b / 2);
  }
  buckets_.push_back(most);
  const int64_t n = buckets_.back(), tiles = TilesFor(n);
  const int64_t size = 3 * n + max_rows_ + 2 * tiles + (max_rows_ + 1) * width_;
  tiled_ = PrefillAttentionTakes(static_cast<int>(model->config().head_dim()));
  attention_version_ = PrefillAttentionVersionFromEnv();
  auto int_opts = torch::TensorOptions().dtype(torch::kInt);
  host_inputs_ = torch::zeros({size}, int_opts.pinned_memory(true));
  inputs_ = torch::zeros({size}, int_opts.device(model->options().device));
  ids_ = inputs_.narrow(0, 0, n);
  positions_ = inputs_.narrow(0, n, n);
  table_rows_ = inputs_.narrow(0, 2 * n, n);
  last_ = inputs_.narrow(0, 3 * n, max_rows_);
  tiles_ = inputs_.narrow(0, 3 * n + max_rows_, 2 * tiles);
  tables_ = inputs_.narrow(0, 3 * n + max_rows_ + 2 * tiles, (max_rows_ + 1) * width_)
                .view({max_rows_ + 1, width_});
}

int64_t GraphPrefill::BucketFor(int64_t tokens) const {
  return *std::lower_bound(buckets_.begin(), buckets_.end(), tokens);
}

int64_t GraphPrefill::RowsFor(int64_t bucket) const { return std::min(bucket, max_rows_); }

int64_t GraphPrefill::TilesFor(int64_t bucket) const {
  return (bucket + kPrefillQueryTile - 1) / kPrefillQueryTile + RowsFor(bucket);
}

void GraphPrefill::Stage(const std::vector<std::vector<int>>& prompts, int64_t row_begin,
                         const Pass& pass, int64_t bucket) {
  const int64_t n = buckets_.back();
  const int64_t vocab = model_->config().vocab_size;
  BlockTables& tables = cache_->tables();
  inputs_copied_.synchronize();  // the previous pass's copy has read host_inputs_
  int32_t* ids = host_inputs_.data_ptr<int32_t>();
  int32_t* positions = ids + n;
  int32_t* rows = ids + 2 * n;
  int32_t* last = ids + 3 * n;
  int32_t* tiles = last + max_rows_;
  int32_t* table = tiles + 2 * TilesFor(n);
  int64_t tile = 0;
  const int32_t scratch = tables.scratch_page();
  int64_t t = 0;
  for (int64_t i = 0; i < pass.count; ++i) {
    const int64_t row = row_begin + pass.first + i;
    const std::vector<int>& prompt = prompts[pass.first + i];
    const int64_t begin = cache_->length(row), end = static_cast<int64_t>(prompt.size());
    const absl::Status room = tables.PrepareWrite(row, begin, end);
    // A full pool is out of KV memory (RunTorch: RESOURCE_EXHAUSTED).
    TORCH_CHECK_WITH(OutOfMemoryError, room.code() != absl::StatusCode::kResourceExhausted,
                     "KV cache row ", row, ": ", room.ToString());
    TORCH_CHECK(room.ok(), "KV cache row ", row, ": ", room.ToString());
    for (int64_t p = begin; p < end; ++p, ++t) {
      TORCH_CHECK(prompt[p] >= 0 && prompt[p] < vocab, "token ", prompt[p], " of row ", row,
                  " is outside the vocabulary");
      if ((p - begin) % kPrefillQueryTile == 0) {  // a tile starts
        tiles[2 * tile] = static_cast<int32_t>(t);
        tiles[2 * tile + 1] = static_cast<int32_t>(std::min<int64_t>(kPrefillQueryTile, end - p));
        ++tile;
      }
      ids[t] = prompt[p];
      positions[t] = static_cast<int32_t>(p);
      rows[t] = static_cast<int32_t>(i);
    }
    last[i] = static_cast<int32_t>(t - 1);
    const std::vector<int32_t>& pages = tables.pages(row);
    int32_t* own = table + i * width_;
    std::fill(own, own + width_, scratch);
    std::copy(pages.begin(), pages.end(), own);
  }
  // Padding: token 0 at position 0 of the scratch row; rows past the pass's
  // pick token 0 (their logits are not read).
  std::fill(ids + t, ids + bucket, 0);
  std::fill(positions + t, positions + bucket, 0);
  std::fill(rows + t, rows + bucket, static_cast<int32_t>(max_rows_));
  std::fill(last + pass.count, last + max_rows_, 0);
  std::fill(tiles + 2 * tile, tiles + 2 * TilesFor(n), 0);
  int32_t* scratch_row = table + max_rows_ * width_;
  std::fill(scratch_row, scratch_row + width_, scratch);
  inputs_.copy_(host_inputs_, /*non_blocking=*/true);
  inputs_copied_.record();
}

torch::Tensor GraphPrefill::Forward(int64_t bucket) {
  const Gpt2Config& config = model_->config();
  const double eps = config.layer_norm_epsilon;
  const auto& blocks = model_->blocks();
  torch::Tensor ids = ids_.narrow(0, 0, bucket);
  torch::Tensor positions = positions_.narrow(0, 0, bucket);  // also each query's last key
  torch::Tensor rows = table_rows_.narrow(0, 0, bucket);
  torch::Tensor x = torch::empty({bucket, config.n_embd}, model_->wte().options());  // residual
  torch::Tensor h = EmbedLayerNorm(model_->wte(), model_->wpe(), ids, positions, blocks[0].ln_1_w,
                                   blocks[0].ln_1_b, eps, x);  // (bucket, C)
  // One key range per query where the queries alone fill the GPU (a long
  // row's keys are then read in tiles by one block); ranges as decode's
  // where they do not.
  const int sms = MultiprocessorCount();
  // The tiled kernel's key splits for a pass of up to `bucket` queries: a
  // short suffix over a long cached row spreads its keys over the GPU (a
  // replay's rows are not known at capture).
  const int tile_splits = PrefillAttentionSplits(
      static_cast<int>(bucket), static_cast<int>(config.n_head),
      static_cast<int>(std::min(cache_->capacity(), config.n_positions)), sms);
  const int64_t splits =
      bucket * config.n_head >= 4 * sms
          ? 1
          : DecodeAttentionSplits(static_cast<int>(bucket), static_cast<int>(config.n_head),
                                  static_cast<int>(cache_->capacity()), sms);
  for (size_t l = 0; l < blocks.size(); ++l) {
    const Gpt2Model::Block& b = blocks[l];
    const bool last_layer = l + 1 == blocks.size();
    const torch::Tensor& next_w = last_layer ? model_->ln_f_w() : blocks[l + 1].ln_1_w;
    const torch::Tensor& next_b = last_layer ? model_->ln_f_b() : blocks[l + 1].ln_1_b;
    torch::Tensor k_pages = cache_->k_pages(static_cast<int64_t>(l));
    torch::Tensor v_pages = cache_->v_pages(static_cast<int64_t>(l));
    torch::Tensor qkv = torch::addmm(b.c_attn_b, h, b.c_attn_w);  // (bucket, 3C)
    AppendKv(qkv, k_pages, v_pages, tables_, rows, positions);
    torch::Tensor y =
        tiled_ ? PrefillAttention(qkv, k_pages, v_pages, tables_, rows, positions,
                                  tiles_.narrow(0, 0, 2 * TilesFor(bucket)).view({-1, 2}),
                                  tile_splits, attention_version_)
               : PagedAttention(qkv, k_pages, v_pages, tables_, rows, positions, splits);
    h = AddLayerNorm(x, torch::addmm(b.c_proj_b, y, b.c_proj_w), b.ln_2_w, b.ln_2_b, eps);
    torch::Tensor f = at::_addmm_activation(b.fc_b, h, b.fc_w, 1, 1, /*use_gelu=*/true);
    h = AddLayerNorm(x, torch::addmm(b.mlp_proj_b, f, b.mlp_proj_w), next_w, next_b, eps);
  }
  // Each row's last token, then the lm_head over the vocabulary padded to a
  // multiple of 64 (GraphDecodeStep::Forward says why).
  torch::Tensor last = h.index_select(0, last_.narrow(0, 0, RowsFor(bucket)));  // (rows, C)
  torch::Tensor padded = torch::mm(last, model_->lm_head().t());                // (rows, V64)
  torch::Tensor logits =
      torch::empty({last.size(0), config.vocab_size}, padded.options().dtype(torch::kFloat));
  logits.copy_(padded.narrow(1, 0, config.vocab_size));
  return logits;
}

torch::Tensor GraphPrefill::Capture(int64_t bucket) {
  c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream();
  at::cuda::CUDAEvent staged;
  staged.record(current);
  staged.block(side_);
  torch::Tensor eager;
  {
    c10::cuda::CUDAStreamGuard guard(side_);
    eager = Forward(bucket);
    Graph g;
    g.graph = std::make_unique<at::cuda::CUDAGraph>();
    g.graph->capture_begin(pool_, cudaStreamCaptureModeThreadLocal);
    g.logits = Forward(bucket);
    g.graph->capture_end();
    graphs_[bucket] = std::move(g);
  }
  at::cuda::CUDAEvent done;
  done.record(side_);
  done.block(current);
  eager.record_stream(current);
  return eager;
}

torch::Tensor GraphPrefill::Launch(int64_t bucket) {
  auto it = graphs_.find(bucket);
  if (it == graphs_.end()) return Capture(bucket);
  it->second.graph->replay();
  return it->second.logits;
}

void GraphPrefill::Prepare() {
  torch::InferenceMode guard;
  for (int64_t bucket : buckets_) {
    if (graphs_.count(bucket) > 0) continue;
    Stage({}, 0, Pass{}, bucket);
    Capture(bucket);
  }
  c10::cuda::getCurrentCUDAStream().synchronize();
}

std::vector<torch::Tensor> GraphPrefill::Run(const std::vector<std::vector<int>>& prompts,
                                             int64_t row_begin) {
  torch::InferenceMode guard;
  const int64_t count = static_cast<int64_t>(prompts.size());
  TORCH_CHECK(row_begin >= 0 && row_begin + count <= cache_->batch(), "prefill of rows ", row_begin,
              "..", row_begin + count, " outside the cache's ", cache_->batch());
  std::vector<int64_t> left(count);
  int64_t pairs = 0;  // (query, key) pairs of one head and layer
  for (int64_t r = 0; r < count; ++r) {
    const int64_t cached = cache_->length(row_begin + r);
    left[r] = static_cast<int64_t>(prompts[r].size()) - cached;
    TORCH_CHECK(left[r] > 0, "prefill: row ", row_begin + r, " has nothing left to prefill");
    // A row longer than the largest pass (a model of more than 8192
    // positions) runs eagerly, as the whole batch then.
    if (left[r] > buckets_.back()) return PrefillBatch(*model_, *cache_, prompts, 0, row_begin);
    pairs += left[r] * cached + left[r] * (left[r] + 1) / 2;
  }
  const Gpt2Config& config = model_->config();
  if (eager_above_pairs_ > 0 && pairs * config.n_head * config.n_layer > eager_above_pairs_) {
    return PrefillBatch(*model_, *cache_, prompts, 0, row_begin);
  }
  std::vector<torch::Tensor> logits(count);
  for (int64_t r = 0; r < count;) {
    Pass pass{r, 0, 0};
    while (r < count && pass.count < max_rows_ && pass.tokens + left[r] <= buckets_.back()) {
      pass.tokens += left[r++];
      ++pass.count;
    }
    const int64_t bucket = BucketFor(pass.tokens);
    Stage(prompts, row_begin, pass, bucket);
    // The graph's logits are overwritten by its next replay: copied out.
    torch::Tensor out = Launch(bucket).narrow(0, 0, pass.count).clone();
    for (int64_t i = 0; i < pass.count; ++i) {
      const int64_t row = row_begin + pass.first + i;
      cache_->set_length(row, static_cast<int64_t>(prompts[pass.first + i].size()));
      logits[pass.first + i] = out.narrow(0, i, 1);
    }
  }
  return logits;
}

}  // namespace nanoserve::cuda
