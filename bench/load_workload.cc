#include "bench/load_workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace nanoserve {
namespace {

using nlohmann::json;

int64_t Draw(const LengthRange& range, std::mt19937_64& rng) {
  return std::uniform_int_distribution<int64_t>(range.min, range.max)(rng);
}

std::vector<int> RandomIds(int64_t length, int64_t vocab, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> id(0, static_cast<int>(vocab - 1));
  std::vector<int> ids(length);
  for (int& t : ids) t = id(rng);
  return ids;
}

absl::Status CheckOptions(const WorkloadOptions& o) {
  if (o.requests < 1) return absl::InvalidArgumentError("--requests must be at least 1");
  if (o.vocab_size < 1) return absl::InvalidArgumentError("--vocab_size must be at least 1");
  if (!(o.shared_prefix_share >= 0 && o.shared_prefix_share <= 1)) {
    return absl::InvalidArgumentError("--shared_prefix_share must be in [0, 1]");
  }
  if (o.shared_prefix_len < 0) {
    return absl::InvalidArgumentError("--shared_prefix_len must not be negative");
  }
  const bool sharing = o.shared_prefix_len > 0 && o.shared_prefix_share > 0;
  if (sharing && !o.prompts_file.empty()) {
    return absl::InvalidArgumentError("a shared prefix needs synthetic prompts, not a file");
  }
  if (sharing && o.shared_prefix_len > o.prompt_len.min) {
    return absl::InvalidArgumentError(absl::StrCat("--shared_prefix_len ", o.shared_prefix_len,
                                                   " is longer than the shortest prompt (",
                                                   o.prompt_len.min, ")"));
  }
  return absl::OkStatus();
}

// One JSON line of a prompts file.
absl::StatusOr<LoadPrompt> ParseJsonLine(absl::string_view line) {
  const json j = json::parse(line.begin(), line.end(), nullptr, false);
  if (!j.is_object() || !j.contains("prompt")) {
    return absl::InvalidArgumentError("not a JSON object with a \"prompt\"");
  }
  LoadPrompt p;
  const json& prompt = j["prompt"];
  if (prompt.is_string()) {
    p.prompt_text = prompt.get<std::string>();
  } else if (prompt.is_array() && !prompt.empty() &&
             std::all_of(prompt.begin(), prompt.end(),
                         [](const json& id) { return id.is_number_integer(); })) {
    p.prompt_ids = prompt.get<std::vector<int>>();
  } else {
    return absl::InvalidArgumentError("\"prompt\" must be a string or an array of token ids");
  }
  if (auto it = j.find("max_tokens"); it != j.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1) {
      return absl::InvalidArgumentError("\"max_tokens\" must be a positive integer");
    }
    p.max_tokens = it->get<int64_t>();
  }
  return p;
}

}  // namespace

absl::StatusOr<LengthRange> ParseLengthRange(absl::string_view spec) {
  std::vector<absl::string_view> parts = absl::StrSplit(spec, ':');
  LengthRange range;
  const bool parsed =
      (parts.size() == 1 || parts.size() == 2) && absl::SimpleAtoi(parts[0], &range.min) &&
      absl::SimpleAtoi(parts.back(), &range.max) && range.min >= 1 && range.max >= range.min;
  if (!parsed) {
    return absl::InvalidArgumentError(
        absl::StrCat("length \"", spec, "\": expected N or A:B with 1 <= A <= B"));
  }
  return range;
}

absl::StatusOr<std::vector<LoadPrompt>> ParsePromptsFile(absl::string_view content) {
  std::vector<LoadPrompt> prompts;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    if (line.front() != '{') {
      prompts.push_back(LoadPrompt{{}, std::string(line), 0, false});
      continue;
    }
    absl::StatusOr<LoadPrompt> p = ParseJsonLine(line);
    if (!p.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompts file line ", line_number, ": ", p.status().message()));
    }
    prompts.push_back(*std::move(p));
  }
  if (prompts.empty()) return absl::InvalidArgumentError("the prompts file has no prompt");
  return prompts;
}

absl::StatusOr<std::vector<LoadPrompt>> BuildWorkload(const WorkloadOptions& o) {
  if (absl::Status bad = CheckOptions(o); !bad.ok()) return bad;
  std::mt19937_64 rng(o.seed);
  std::vector<LoadPrompt> requests;
  if (!o.prompts_file.empty()) {
    std::ifstream in(o.prompts_file);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", o.prompts_file));
    const std::string content((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
    absl::StatusOr<std::vector<LoadPrompt>> lines = ParsePromptsFile(content);
    if (!lines.ok()) return lines.status();
    for (int64_t i = 0; i < o.requests; ++i) {
      requests.push_back((*lines)[i % lines->size()]);
      if (requests.back().max_tokens == 0) requests.back().max_tokens = Draw(o.output_len, rng);
    }
    return requests;
  }
  for (int64_t i = 0; i < o.requests; ++i) {
    LoadPrompt p;
    p.prompt_ids = RandomIds(Draw(o.prompt_len, rng), o.vocab_size, rng);
    p.max_tokens = Draw(o.output_len, rng);
    requests.push_back(std::move(p));
  }
  const auto shared = static_cast<int64_t>(std::llround(o.shared_prefix_share * o.requests));
  if (o.shared_prefix_len == 0 || shared == 0) return requests;
  const std::vector<int> prefix = RandomIds(o.shared_prefix_len, o.vocab_size, rng);
  std::vector<int64_t> order(o.requests);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  for (int64_t k = 0; k < shared; ++k) {
    LoadPrompt& p = requests[order[k]];
    std::copy(prefix.begin(), prefix.end(), p.prompt_ids.begin());
    p.shared_prefix = true;
  }
  return requests;
}

}  // namespace nanoserve
