#include "bench/decode_bench.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <random>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/fail.h"
#include "bench/results.h"
#include "bench/runner.h"
#include "bench/sweep.h"
#include "engine/device.h"
#include "engine/generate.h"
#include "engine/model_loader.h"
#ifdef NANOSERVE_WITH_CUDA
#include "engine/cuda/decode_profile.h"
#endif

namespace nanoserve {
namespace {

// `batch` prompts of `length` seeded random token ids below `vocab`.
std::vector<std::vector<int>> RandomPrompts(int64_t batch, int64_t length, int64_t vocab,
                                            uint64_t seed) {
  std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(batch));
  std::uniform_int_distribution<int> token(0, static_cast<int>(vocab) - 1);
  std::vector<std::vector<int>> prompts(batch, std::vector<int>(length));
  for (auto& p : prompts) {
    for (int& t : p) t = token(rng);
  }
  return prompts;
}

struct Row {
  std::string attention, decode, pass;
  int64_t batch = 0;
  double step_ms = 0, tokens_per_s = 0, ttft_ms = 0;
  std::string same_tokens;  // "yes", "no", or "-" for the baseline
};

// The profile tables of BenchDecodeOptions::profile.
absl::Status PrintProfiles(const Gpt2Model& model, const BenchDecodeOptions& o) {
#ifdef NANOSERVE_WITH_CUDA
  const int64_t capacity = o.prompt_len + o.output_len;
  for (int64_t batch : o.batch_sizes) {
    auto cache_owned = KvCache::Create(model.config(), batch, capacity, model.options().dtype,
                                       model.options().device)
                           .value();
    KvCache& cache = *cache_owned;
    const int64_t cached = o.prompt_len + o.output_len / 2;
    for (int64_t r = 0; r < batch; ++r) {  // each row's pages, then its length
      if (absl::Status room = cache.tables().PrepareWrite(r, 0, cached); !room.ok()) return room;
      cache.set_length(r, cached);
    }
    auto timings = cuda::ProfileDecodeStep(model, cache, batch);
    if (!timings.ok()) return timings.status();
    std::printf(
        "\nwhere a cuda-graph decode step goes, batch %lld, %lld cached tokens a row "
        "(device time per step):\n\n| operation | launches | us |\n| --- | --- | --- |\n",
        static_cast<long long>(batch), static_cast<long long>(cached));
    for (const cuda::OpTiming& t : *timings) {
      std::printf("| %s | %lld | %.1f |\n", t.op.c_str(), static_cast<long long>(t.per_step), t.us);
    }
  }
  std::fflush(stdout);
  return absl::OkStatus();
#else
  (void)model;
  (void)o;
  return absl::FailedPreconditionError("bench-decode --profile needs a CUDA build");
#endif
}

std::vector<std::vector<int>> Outputs(const GenerateResult& r) {
  std::vector<std::vector<int>> out;
  for (const auto& s : r.sequences) out.push_back(s.output_ids);
  return out;
}

}  // namespace

absl::Status ParseBenchDecodeLists(absl::string_view attentions, absl::string_view decodes,
                                   absl::string_view batches, BenchDecodeOptions& o) {
  auto attention_kinds = ParseKindList<AttentionKind>(attentions, ParseAttentionKind);
  if (!attention_kinds.ok()) return attention_kinds.status();
  o.attentions = *attention_kinds;
  auto decode_kinds = ParseKindList<DecodeKind>(decodes, ParseDecodeKind);
  if (!decode_kinds.ok()) return decode_kinds.status();
  o.decodes.clear();
  for (DecodeKind kind : *decode_kinds) {
    if (kind == DecodeKind::kAuto) {
      o.decodes.push_back(DecodeKind::kReference);
      if (absl::StartsWith(o.device, "cuda")) o.decodes.push_back(DecodeKind::kCudaGraph);
    } else {
      o.decodes.push_back(kind);
    }
  }
  auto sizes = ParseIntList(batches);
  if (!sizes.ok()) return sizes.status();
  o.batch_sizes = *sizes;
  return absl::OkStatus();
}

int RunBenchDecode(const BenchDecodeOptions& o) {
  if (o.batch_sizes.empty() || o.decodes.empty() || o.attentions.empty() || o.repeats < 1 ||
      o.prompt_len < 1 || o.output_len < 2) {
    return Fail(absl::InvalidArgumentError(
        "bench-decode needs batch sizes, decode kinds, attention kinds, repeats >= 1, "
        "a prompt and at least 2 output tokens"));
  }
  auto resolved = ResolveCheckpoint(o.model, o.seed);
  if (!resolved.ok()) return Fail(resolved.status());
  const Gpt2Config& config = resolved->checkpoint.config;
  if (o.prompt_len + o.output_len > config.n_positions) {
    return Fail(
        absl::InvalidArgumentError(absl::StrCat("prompt + output (", o.prompt_len + o.output_len,
                                                ") exceed the context of ", config.n_positions)));
  }
  auto base = ParseModelOptions(o.device, o.dtype, "naive");
  if (!base.ok()) return Fail(base.status());
  const std::string card = o.card.empty() ? CardName(base->device) : o.card;
  std::printf(
      "bench-decode: %s, %s %s on %s; %lld-token prompts, %lld new tokens, median of %lld\n\n",
      resolved->description.c_str(), o.device.c_str(), o.dtype.c_str(), card.c_str(),
      static_cast<long long>(o.prompt_len), static_cast<long long>(o.output_len),
      static_cast<long long>(o.repeats));
  std::printf(
      "| attention | decode | batch | pass | decode step (ms) | output tokens/s | TTFT (ms) | same "
      "tokens |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  std::vector<Row> rows;
  GenerateOptions generate;
  generate.max_new_tokens = o.output_len;
  generate.stop_at_end_of_text = false;
  for (AttentionKind attention : o.attentions) {
    ModelOptions mo = *base;
    mo.attention = attention;
    auto model = Gpt2Model::Create(resolved->checkpoint, mo);
    if (!model.ok()) return Fail(model.status());
    for (int64_t batch : o.batch_sizes) {
      const auto prompts = RandomPrompts(batch, o.prompt_len, config.vocab_size, o.seed);
      std::vector<std::vector<int>> baseline;
      for (DecodeKind kind : o.decodes) {
        generate.decode = kind;
        Generator generator(model->get());
        std::vector<double> step, rate, ttft;
        std::vector<std::vector<int>> tokens;
        for (int64_t pass = 0; pass <= o.repeats; ++pass) {
          auto r = generator.Generate(prompts, generate);
          if (!r.ok()) return Fail(r.status());
          tokens = Outputs(*r);
          if (pass == 0) {
            Row first{
                AttentionKindName(attention), r->stats.decode_step,       "first",          batch,
                r->stats.decode_ms_per_step,  r->stats.tokens_per_second, r->stats.ttft_ms, ""};
            rows.push_back(first);
            continue;
          }
          step.push_back(r->stats.decode_ms_per_step);
          rate.push_back(r->stats.tokens_per_second);
          ttft.push_back(r->stats.ttft_ms);
        }
        std::string same = "-";
        if (baseline.empty()) {
          baseline = tokens;
        } else {
          same = tokens == baseline ? "yes" : "no";
        }
        rows.back().same_tokens = same;
        rows.push_back({AttentionKindName(attention), rows.back().decode, "warm", batch,
                        Median(step), Median(rate), Median(ttft), same});
        for (size_t i = rows.size() - 2; i < rows.size(); ++i) {
          const Row& w = rows[i];
          std::printf("| %s | %s | %lld | %s | %.3f | %.0f | %.2f | %s |\n", w.attention.c_str(),
                      w.decode.c_str(), static_cast<long long>(w.batch), w.pass.c_str(), w.step_ms,
                      w.tokens_per_s, w.ttft_ms, w.same_tokens.c_str());
        }
        std::fflush(stdout);
      }
    }
  }
  if (o.profile) {
    ModelOptions mo = *base;
    auto model = Gpt2Model::Create(resolved->checkpoint, mo);
    if (!model.ok()) return Fail(model.status());
    if (absl::Status s = PrintProfiles(**model, o); !s.ok()) return Fail(s);
  }
  if (!o.csv_path.empty()) {
    std::ofstream csv(o.csv_path);
    csv << "card,model,device,dtype,attention,decode,batch,prompt_len,output_len,pass,"
           "decode_step_ms,tokens_per_s,ttft_ms,same_tokens\n";
    for (const Row& w : rows) {
      csv << '"' << card << "\"," << o.model << ',' << o.device << ',' << o.dtype << ','
          << w.attention << ',' << w.decode << ',' << w.batch << ',' << o.prompt_len << ','
          << o.output_len << ',' << w.pass << ',' << absl::StrFormat("%.4f", w.step_ms) << ','
          << absl::StrFormat("%.1f", w.tokens_per_s) << ',' << absl::StrFormat("%.3f", w.ttft_ms)
          << ',' << w.same_tokens << '\n';
    }
    if (!csv) return Fail(absl::UnavailableError(absl::StrCat("cannot write ", o.csv_path)));
  }
  return 0;
}

}  // namespace nanoserve
