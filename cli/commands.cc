#include "cli/commands.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/dtype.h"
#include "cli/command_table.h"
#include "engine/attention.h"
#include "engine/device.h"
#include "engine/model_loader.h"
#include "engine/tokenizer.h"
#include "kv_cache/prefix_cache.h"

namespace nanoserve {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot read %s", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadPrompts(const GenerateCommandOptions& o) {
  const int sources = !o.prompt.empty() + !o.prompt_file.empty() + !o.prompts_file.empty();
  if (sources > 1) {
    return absl::InvalidArgumentError("give only one of --prompt, --prompt-file, --prompts-file");
  }
  if (!o.prompt_file.empty()) {
    auto text = ReadFile(o.prompt_file);
    if (!text.ok()) return text.status();
    return std::vector<std::string>{*text};
  }
  if (!o.prompts_file.empty()) {
    auto text = ReadFile(o.prompts_file);
    if (!text.ok()) return text.status();
    std::vector<std::string> prompts;
    if (absl::StartsWith(absl::StripLeadingAsciiWhitespace(*text), "[")) {
      auto json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
      if (!json.is_array()) {
        return absl::InvalidArgumentError(o.prompts_file + ": not a JSON array of strings");
      }
      for (const auto& item : json) {
        if (!item.is_string()) {
          return absl::InvalidArgumentError(o.prompts_file + ": every item must be a string");
        }
        prompts.push_back(item.get<std::string>());
      }
    } else {
      std::string body(absl::StripSuffix(*text, "\n"));
      for (absl::string_view line : absl::StrSplit(body, '\n')) {
        prompts.emplace_back(absl::StripSuffix(line, "\r"));
      }
    }
    if (prompts.empty() || (prompts.size() == 1 && prompts[0].empty())) {
      return absl::InvalidArgumentError(o.prompts_file + ": no prompts in the file");
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (prompts[i].empty()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: prompt %d (line %d) is empty", o.prompts_file, i, i + 1));
      }
    }
    return prompts;
  }
  if (o.prompt.empty()) {
    return absl::InvalidArgumentError(
        "the prompt is empty: give --prompt, --prompt-file or --prompts-file");
  }
  return std::vector<std::string>{o.prompt};
}

namespace {

nlohmann::json StatsJson(const GenerateStats& s) {
  return {{"prompt_tokens", s.prompt_tokens},
          {"prompt_tokens_computed", s.prompt_tokens_computed},
          {"prompt_tokens_reused", s.prompt_tokens_reused},
          {"output_tokens", s.output_tokens},
          {"prefill_ms", s.prefill_ms},
          {"ttft_ms", s.ttft_ms},
          {"total_ms", s.total_ms},
          {"ms_per_output_token", s.ms_per_output_token},
          {"decode_ms_per_step", s.decode_ms_per_step},
          {"tokens_per_second", s.tokens_per_second},
          {"decode_step", s.decode_step},
          {"peak_memory_bytes", s.memory.peak_bytes},
          {"peak_reserved_bytes", s.memory.reserved_bytes},
          {"memory_source", s.memory.source}};
}

void PrintSummary(const GenerateStats& s, int64_t batch) {
  std::fprintf(
      stderr,
      "\n--- batch %lld: prompt tokens %lld (computed %lld, reused %lld), output tokens %lld\n"
      "    time to first token %.2f ms, total %.2f ms, %.3f ms per output token, "
      "%.1f tokens/s, peak memory %.1f MiB (%s), decode step %s\n",
      static_cast<long long>(batch), static_cast<long long>(s.prompt_tokens),
      static_cast<long long>(s.prompt_tokens_computed),
      static_cast<long long>(s.prompt_tokens_reused), static_cast<long long>(s.output_tokens),
      s.ttft_ms, s.total_ms, s.ms_per_output_token, s.tokens_per_second,
      s.memory.peak_bytes / 1048576.0, s.memory.source.c_str(),
      s.decode_step.empty() ? "-" : s.decode_step.c_str());
}

}  // namespace

int RunTokenize(const std::string& text) {
  auto tokenizer = Gpt2Tokenizer::LoadDefault();
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::printf("%s\n", nlohmann::json((*tokenizer)->Encode(text)).dump().c_str());
  return 0;
}

int RunDetokenize(const std::string& ids_text) {
  auto tokenizer = Gpt2Tokenizer::LoadDefault();
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::vector<int> ids;
  for (absl::string_view part : absl::StrSplit(ids_text, ',', absl::SkipWhitespace())) {
    int id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      return Fail(absl::InvalidArgumentError(absl::StrFormat("'%s' is not a token id", part)));
    }
    ids.push_back(id);
  }
  auto text = (*tokenizer)->Decode(ids);
  if (!text.ok()) return Fail(text.status());
  std::printf("%s\n", text->c_str());
  return 0;
}

int RunGenerate(const GenerateCommandOptions& o) {
  auto prompts_text = ReadPrompts(o);
  if (!prompts_text.ok()) return Fail(prompts_text.status());
  GenerateOptions generate = o.generate;
  auto mode = ParseKvCacheMode(o.kv_cache);
  if (!mode.ok()) return Fail(mode.status());
  generate.kv_cache = *mode;
  if (auto s = ValidateSamplingOptions(generate.sampling); !s.ok()) return Fail(s);
  if (o.repeat < 1) return Fail(absl::InvalidArgumentError("--repeat must be >= 1"));
  auto parsed = ParseModelOptions(o.device, o.dtype, o.attention);
  if (!parsed.ok()) return Fail(parsed.status());
  const ModelOptions model_options = *parsed;

  auto tokenizer = Gpt2Tokenizer::LoadDefault();
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::vector<std::vector<int>> prompts;
  for (const std::string& p : *prompts_text) prompts.push_back((*tokenizer)->Encode(p));

  auto loaded = LoadModel(o.model, model_options, o.seed);
  if (!loaded.ok()) return Fail(loaded.status());
  const Gpt2Model& model = *loaded->model;
  if (loaded->random_weights) {
    std::fprintf(stderr,
                 "nanoserve: warning: %s has random weights: the text will be meaningless "
                 "(timings are real)\n",
                 loaded->description.c_str());
  }

  std::unique_ptr<PrefixCache> prefix_cache;
  if (generate.kv_cache == KvCacheMode::kPrefix) {
    PrefixCacheOptions cache_options;
    cache_options.pool.layout = KvPageLayout(model.config(), model_options.dtype, o.page_size);
    cache_options.pool.byte_budget = o.prefix_cache_mb << 20;
    cache_options.pool.device = model_options.device;
    auto created = PrefixCache::Create(cache_options);
    if (!created.ok()) return Fail(created.status());
    prefix_cache = *std::move(created);
  }
  Generator generator(&model, prefix_cache.get());

  const bool stream = !o.json && prompts.size() == 1;
  nlohmann::json runs = nlohmann::json::array();
  for (int64_t run = 0; run < o.repeat; ++run) {
    if (prefix_cache != nullptr && o.cold_prefix_cache) prefix_cache->EvictAll();
    StreamingDecoder decoder(**tokenizer);
    TokenSink sink;
    if (stream) {
      std::printf("%s", (*prompts_text)[0].c_str());
      sink = [&](int64_t, int token) {
        auto piece = decoder.Push(token);
        if (piece.ok()) std::printf("%s", piece->c_str());
        std::fflush(stdout);
      };
    }
    auto result = generator.Generate(prompts, generate, sink);
    if (!result.ok()) return Fail(result.status());
    nlohmann::json sequences = nlohmann::json::array();
    for (size_t i = 0; i < result->sequences.size(); ++i) {
      const SequenceResult& seq = result->sequences[i];
      auto text = (*tokenizer)->Decode(seq.output_ids);
      std::string text_out = text.ok() ? *text : "";
      sequences.push_back({{"prompt_ids", seq.prompt_ids},
                           {"output_ids", seq.output_ids},
                           {"text", text_out},
                           {"finish_reason", seq.finish_reason},
                           {"cached_prompt_tokens", seq.cached_prompt_tokens}});
      if (!o.json && !stream) {
        std::printf("[%zu] %s%s\n", i, (*prompts_text)[i].c_str(), text_out.c_str());
      }
    }
    if (stream) std::printf("%s\n", decoder.Flush().c_str());
    if (!o.json) PrintSummary(result->stats, run);
    runs.push_back({{"sequences", sequences}, {"stats", StatsJson(result->stats)}});
  }
  if (o.json) {
    nlohmann::json out = runs.size() == 1 ? runs[0] : nlohmann::json{{"runs", runs}};
    if (prompts.size() == 1 && o.repeat == 1) {
      out = runs[0]["sequences"][0];
      out["stats"] = runs[0]["stats"];
    }
    out["model"] = loaded->description;
    out["kv_cache"] = KvCacheModeName(generate.kv_cache);
    out["attention"] = AttentionKindName(model_options.attention);
    out["device"] = model_options.device.str();
    out["dtype"] = DtypeName(model_options.dtype);
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  return 0;
}

}  // namespace nanoserve
