#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/torch_status.h"
#include "engine/prefill.h"
#include "kv_cache/prefix_cache.h"
#include "kv_cache/prefix_store.h"
#include "kv_cache/prompt_check.h"

namespace nanoserve {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

torch::Tensor LongTensor(const std::vector<int64_t>& values, int64_t rows, int64_t cols) {
  return torch::tensor(values, torch::kLong).view({rows, cols});
}

// Positions begin..begin+n-1 as a (1, n) tensor.
torch::Tensor Positions(int64_t begin, int64_t n) {
  return torch::arange(begin, begin + n, torch::kLong).view({1, n});
}

}  // namespace

absl::StatusOr<KvCacheMode> ParseKvCacheMode(absl::string_view name) {
  if (name == "off") return KvCacheMode::kOff;
  if (name == "on") return KvCacheMode::kOn;
  if (name == "prefix") return KvCacheMode::kPrefix;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown --kv-cache '", name, "' (expected off, on or prefix)"));
}

std::string KvCacheModeName(KvCacheMode mode) {
  switch (mode) {
    case KvCacheMode::kOff:
      return "off";
    case KvCacheMode::kOn:
      return "on";
    case KvCacheMode::kPrefix:
      return "prefix";
  }
  return "?";
}

absl::Status Generator::Validate(const std::vector<std::vector<int>>& prompts,
                                 const GenerateOptions& options) const {
  const Gpt2Config& config = model_->config();
  if (prompts.empty()) return absl::InvalidArgumentError("no prompts: the batch is empty");
  if (options.prefill_chunk < 0) {
    return absl::InvalidArgumentError("prefill_chunk must be >= 0");
  }
  if (options.min_capacity < 0 || options.min_capacity > config.n_positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_capacity must be in [0, ", config.n_positions, "], not ", options.min_capacity));
  }
  if (options.kv_cache == KvCacheMode::kPrefix && prefix_cache_ == nullptr) {
    return absl::FailedPreconditionError("--kv-cache prefix needs a prefix cache");
  }
  if (absl::Status s = ValidateSamplingOptions(options.sampling); !s.ok()) return s;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = prompts[i];
    const std::string which = prompts.size() > 1 ? absl::StrCat("prompt ", i, ": ") : "";
    if (absl::Status s = ValidatePrompt(p, config.vocab_size, config.n_positions, which); !s.ok()) {
      return s;
    }
    if (absl::Status s = ValidateGenerationLength(
            static_cast<int64_t>(p.size()), options.max_new_tokens, config.n_positions, which);
        !s.ok()) {
      return s;
    }
  }
  if (options.kv_cache == KvCacheMode::kPrefix) {
    // The pool is the only home of K/V: every row's pages come from it.
    const int64_t page = prefix_cache_->page_size();
    int64_t needed = 0;
    for (const auto& p : prompts) {
      const int64_t tokens =
          std::max(static_cast<int64_t>(p.size()) + options.max_new_tokens, options.min_capacity);
      needed += (tokens + page - 1) / page;
    }
    if (needed + 1 > prefix_cache_->num_pages()) {  // + the rows' scratch page
      return absl::InvalidArgumentError(absl::StrCat("the batch needs ", needed, " pages of ", page,
                                                     " tokens, more than the prefix cache pool"
                                                     " holds (",
                                                     prefix_cache_->num_pages(),
                                                     "); raise its byte budget"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateResult> Generator::Generate(const std::vector<std::vector<int>>& prompts,
                                                   const GenerateOptions& options,
                                                   const TokenSink& sink) {
  if (absl::Status s = Validate(prompts, options); !s.ok()) return s;
  absl::StatusOr<GenerateResult> result =
      TorchResult("generation", [&] { return Run(prompts, options, sink); });
  if (!result.ok()) {  // nothing half-done is kept for the next call
    decode_.reset();
    cache_.reset();
  }
  return result;
}

absl::StatusOr<GenerateResult> Generator::Run(const std::vector<std::vector<int>>& prompts,
                                              const GenerateOptions& options,
                                              const TokenSink& sink) {
  const Gpt2Model& model = *model_;
  const torch::Device device = model.options().device;
  const int64_t B = static_cast<int64_t>(prompts.size());
  GenerateResult result;
  GenerateStats& stats = result.stats;
  result.sequences.resize(B);
  int64_t max_prompt = 0;
  for (int64_t r = 0; r < B; ++r) {
    result.sequences[r].prompt_ids = prompts[r];
    stats.prompt_tokens += static_cast<int64_t>(prompts[r].size());
    max_prompt = std::max<int64_t>(max_prompt, prompts[r].size());
  }

  // A cache of another shape is freed before the peak memory is reset, so
  // that the peak counts only this call's.
  const bool cached = options.kv_cache != KvCacheMode::kOff;
  const int64_t capacity = std::max(max_prompt + options.max_new_tokens, options.min_capacity);
  const bool shares_pool = options.kv_cache == KvCacheMode::kPrefix;
  if (!cached || cache_ == nullptr || cache_->batch() != B || cache_->capacity() != capacity ||
      decode_kind_ != options.decode || cache_shares_pool_ != shares_pool) {
    decode_.reset();
    cache_.reset();
  }
  Synchronize(device);
  ResetPeakMemory(device);
  const auto start = Clock::now();
  Sampler sampler(options.sampling);
  std::vector<bool> finished(B, false);
  int64_t steps = 0;

  // Appends one sampled token per row; returns true when every row is done.
  auto accept = [&](const std::vector<int64_t>& next) {
    ++steps;
    bool all_done = true;
    for (int64_t r = 0; r < B; ++r) {
      if (finished[r]) continue;
      SequenceResult& seq = result.sequences[r];
      const int token = static_cast<int>(next[r]);
      seq.output_ids.push_back(token);
      if (sink) sink(r, token);
      if (options.stop_at_end_of_text && token == options.end_of_text_id) {
        finished[r] = true;
        seq.finish_reason = "stop";
      } else if (static_cast<int64_t>(seq.output_ids.size()) >= options.max_new_tokens) {
        finished[r] = true;
        seq.finish_reason = "length";
      }
      all_done = all_done && finished[r];
    }
    return all_done;
  };
  auto mark_first_token = [&]() {
    Synchronize(device);
    stats.ttft_ms = MsSince(start);
  };

  if (options.kv_cache == KvCacheMode::kOff) {
    // Part A: the whole (cropped) sequence through the model at every step.
    std::vector<std::vector<int>> seqs = prompts;
    const int64_t ctx = model.config().n_positions;
    bool done = false;
    while (!done) {
      std::vector<torch::Tensor> last_logits;
      for (int64_t r = 0; r < B; ++r) {
        const auto& s = seqs[r];
        const int64_t n = std::min<int64_t>(static_cast<int64_t>(s.size()), ctx);
        std::vector<int64_t> ids(s.end() - n, s.end());
        torch::Tensor hidden = model.Forward(LongTensor(ids, 1, n), Positions(0, n));
        last_logits.push_back(model.Logits(hidden.select(1, n - 1)));  // (1, V)
      }
      if (steps == 0) stats.prompt_tokens_computed = stats.prompt_tokens;
      absl::StatusOr<std::vector<int64_t>> sampled = sampler.Sample(torch::cat(last_logits));
      if (!sampled.ok()) return sampled.status();
      const std::vector<int64_t>& next = *sampled;
      for (int64_t r = 0; r < B; ++r) seqs[r].push_back(static_cast<int>(next[r]));
      if (steps == 0) {
        stats.prefill_ms = MsSince(start);
      }
      done = accept(next);
      if (steps == 1) mark_first_token();
    }
  } else {
    // Parts B and C: prefill each prompt into its cache row, then decode the
    // batch one token per row per step.
    if (cache_ == nullptr) {
      absl::StatusOr<std::unique_ptr<KvCache>> made =
          shares_pool ? KvCache::Create(prefix_cache_, B, capacity)
                      : KvCache::Create(model.config(), B, capacity, model.options().dtype, device);
      if (!made.ok()) return made.status();
      cache_ = *std::move(made);
      cache_shares_pool_ = shares_pool;
      auto step = MakeDecodeStep(model_, cache_.get(), options.decode);
      if (!step.ok()) {
        cache_.reset();
        return step.status();
      }
      decode_ = std::move(*step);
      decode_kind_ = options.decode;
    }
    KvCache& cache = *cache_;
    // The rows' pages go back to the pool when the call ends, however it
    // ends (what was stored stays in the tree).
    absl::Cleanup empty_rows = [&] {
      for (int64_t r = 0; r < B; ++r) cache.Reset(r);
    };
    for (int64_t r = 0; r < B; ++r) cache.Reset(r);
    stats.decode_step = decode_->name();
    const int64_t shared_before = decode_->shared_prefix_row_steps();
    absl::Cleanup count_shared = [&] {
      stats.shared_prefix_row_steps = decode_->shared_prefix_row_steps() - shared_before;
    };
    std::vector<torch::Tensor> first_logits;
    if (options.kv_cache == KvCacheMode::kPrefix) {
      LocalPrefixStore store(prefix_cache_);
      auto prefilled =
          PrefixPrefill(model, store, options.prefill_chunk, decode_.get()).Run(prompts, cache);
      if (!prefilled.ok()) return prefilled.status();
      first_logits = std::move(prefilled->logits);
      for (int64_t r = 0; r < B; ++r) {
        result.sequences[r].cached_prompt_tokens = prefilled->reused_tokens[r];
        stats.prompt_tokens_reused += prefilled->reused_tokens[r];
      }
      stats.prompt_tokens_computed = prefilled->computed_tokens;
    } else {
      first_logits = decode_->Prefill(prompts, 0, options.prefill_chunk);
      stats.prompt_tokens_computed = stats.prompt_tokens;
    }
    absl::StatusOr<std::vector<int64_t>> first = sampler.Sample(torch::cat(first_logits));
    if (!first.ok()) return first.status();
    std::vector<int64_t> next = *std::move(first);
    stats.prefill_ms = MsSince(start);
    bool done = accept(next);
    mark_first_token();
    const bool greedy = options.sampling.temperature == 0.0;
    while (!done) {
      std::vector<int64_t> best;
      torch::Tensor logits = decode_->Run(next, greedy ? &best : nullptr);  // (B, V)
      if (greedy) {
        next = std::move(best);
      } else {
        absl::StatusOr<std::vector<int64_t>> sampled = sampler.Sample(logits);
        if (!sampled.ok()) return sampled.status();
        next = *std::move(sampled);
      }
      done = accept(next);
    }
  }

  Synchronize(device);
  stats.total_ms = MsSince(start);
  stats.memory = PeakMemory(device);
  int64_t longest = 0;
  for (const auto& seq : result.sequences) {
    stats.output_tokens += static_cast<int64_t>(seq.output_ids.size());
    longest = std::max<int64_t>(longest, seq.output_ids.size());
  }
  stats.ms_per_output_token = stats.total_ms / static_cast<double>(longest);
  stats.decode_ms_per_step = steps > 1 ? (stats.total_ms - stats.ttft_ms) / (steps - 1) : 0.0;
  stats.tokens_per_second = stats.output_tokens / (stats.total_ms / 1000.0);
  return result;
}

}  // namespace nanoserve
