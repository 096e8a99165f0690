#include "decode_service/openai_api.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace nanoserve {
namespace {

using nlohmann::json;

absl::Status Bad(absl::string_view message) { return absl::InvalidArgumentError(message); }

absl::Status NotA(absl::string_view field, absl::string_view what) {
  return Bad(absl::StrCat("'", field, "' must be ", what));
}

// Fields of OpenAI's API that are accepted only with their defaults: these
// say whether a value is the default.
bool IsNullOrFalse(const json& v) { return v.is_null() || (v.is_boolean() && !v.get<bool>()); }
bool IsNullOrZero(const json& v) { return v.is_null() || (v.is_number() && v.get<double>() == 0); }
bool IsNullOrEmpty(const json& v) { return v.is_null() || (v.is_object() && v.empty()); }

// The request's prompts: each a text or a list of token ids.
absl::Status ParsePrompts(const json& prompt, std::vector<GenerateParams>& out) {
  auto ids = [&](const json& list) -> absl::Status {
    GenerateParams p;
    for (const json& id : list) {
      if (!id.is_number_integer() || id.get<int64_t>() < std::numeric_limits<int>::min() ||
          id.get<int64_t>() > std::numeric_limits<int>::max()) {
        return NotA("prompt", "a string, an array of strings or of token ids (integers)");
      }
      p.prompt_ids.push_back(static_cast<int>(id.get<int64_t>()));
    }
    if (p.prompt_ids.empty()) return Bad("'prompt' is empty");
    out.push_back(std::move(p));
    return absl::OkStatus();
  };
  if (prompt.is_string()) {
    GenerateParams p;
    p.prompt = prompt.get<std::string>();
    out.push_back(std::move(p));
    return absl::OkStatus();
  }
  if (!prompt.is_array() || prompt.empty()) {
    return NotA("prompt", "a string, an array of strings or of token ids, not empty");
  }
  if (prompt[0].is_number()) return ids(prompt);
  for (const json& item : prompt) {
    if (item.is_string()) {
      GenerateParams p;
      p.prompt = item.get<std::string>();
      out.push_back(std::move(p));
    } else if (item.is_array()) {
      if (absl::Status s = ids(item); !s.ok()) return s;
    } else {
      return NotA("prompt", "a string, an array of strings or of token ids");
    }
  }
  return absl::OkStatus();
}

// A number field, or `fallback` when absent or null.
absl::StatusOr<double> Number(const json& body, const char* field, double fallback) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_number()) return NotA(field, "a number");
  return it->get<double>();
}

// An integer field; one over 2^63 - 1 is refused by name, unless `wraps`
// (a seed: any 64 bits will do).
absl::StatusOr<int64_t> Integer(const json& body, const char* field, int64_t fallback,
                                bool wraps = false) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return NotA(field, "an integer");
  if (!it->is_number_unsigned()) return it->get<int64_t>();
  const uint64_t value = it->get<uint64_t>();
  if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) && !wraps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", field, "' is ", value, ", too large (at most 2^63 - 1, and the context)"));
  }
  return static_cast<int64_t>(value);
}

absl::StatusOr<bool> Boolean(const json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return false;
  if (!it->is_boolean()) return NotA(field, "true or false");
  return it->get<bool>();
}

absl::StatusOr<std::vector<std::string>> StopStrings(const json& body) {
  std::vector<std::string> stop;
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return stop;
  if (it->is_string()) return std::vector<std::string>{it->get<std::string>()};
  if (!it->is_array()) return NotA("stop", "a string or an array of strings");
  for (const json& s : *it) {
    if (!s.is_string()) return NotA("stop", "a string or an array of strings");
    stop.push_back(s.get<std::string>());
  }
  return stop;
}

// Refuses fields this server does not know, and OpenAI fields it does not
// implement unless they hold their defaults.
absl::Status CheckFields(const json& body) {
  static const char* const kKnown[] = {
      "model",      "prompt",     "max_tokens",       "temperature",      "top_p", "seed",
      "stop",       "n",          "stream",           "stream_options",   "user",  "top_k",
      "ignore_eos", "cache_salt", "return_token_ids", "logprobs",         "echo",  "best_of",
      "suffix",     "logit_bias", "presence_penalty", "frequency_penalty"};
  for (auto it = body.begin(); it != body.end(); ++it) {
    bool known = false;
    for (const char* k : kKnown) known = known || it.key() == k;
    if (!known) return Bad(absl::StrCat("unrecognized request argument supplied: ", it.key()));
  }
  const json null;
  auto get = [&](const char* f) -> const json& {
    auto it = body.find(f);
    return it == body.end() ? null : *it;
  };
  const struct {
    const char* field;
    bool is_default;
  } unsupported[] = {
      {"logprobs", IsNullOrZero(get("logprobs"))},
      {"echo", IsNullOrFalse(get("echo"))},
      {"suffix", get("suffix").is_null() || get("suffix") == ""},
      {"logit_bias", IsNullOrEmpty(get("logit_bias"))},
      {"presence_penalty", IsNullOrZero(get("presence_penalty"))},
      {"frequency_penalty", IsNullOrZero(get("frequency_penalty"))},
  };
  for (const auto& u : unsupported) {
    if (!u.is_default) return Bad(absl::StrCat("'", u.field, "' is not supported"));
  }
  return absl::OkStatus();
}

// The sampling and length fields every choice shares.
absl::Status ParseShared(const json& body, uint64_t random_seed, GenerateParams& shared) {
  auto max_tokens = Integer(body, "max_tokens", 16);
  auto temperature = Number(body, "temperature", 1.0);
  auto top_p = Number(body, "top_p", 1.0);
  auto top_k = Integer(body, "top_k", 0);
  auto seed = Integer(body, "seed", static_cast<int64_t>(random_seed), /*wraps=*/true);
  auto ignore_eos = Boolean(body, "ignore_eos");
  auto stop = StopStrings(body);
  std::string cache_salt;
  if (auto it = body.find("cache_salt"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return NotA("cache_salt", "a string");
    cache_salt = it->get<std::string>();
  }
  for (const absl::Status& s :
       {max_tokens.status(), temperature.status(), top_p.status(), top_k.status(), seed.status(),
        ignore_eos.status(), stop.status()}) {
    if (!s.ok()) return s;
  }
  shared.max_new_tokens = *max_tokens;
  shared.sampling.temperature = *temperature;
  shared.sampling.top_p = *top_p;
  shared.sampling.top_k = *top_k;  // -1 (vLLM's "all") is refused by the stage
  shared.sampling.seed = static_cast<uint64_t>(*seed);
  shared.stop_at_end_of_text = !*ignore_eos;
  shared.stop = *std::move(stop);
  shared.cache_salt = std::move(cache_salt);  // its length is the stage's to check
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(absl::string_view body,
                                                         int64_t max_choices,
                                                         uint64_t random_seed) {
  const json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad("the body is not valid JSON");
  if (!j.is_object()) return Bad("the body must be a JSON object");
  if (absl::Status s = CheckFields(j); !s.ok()) return s;
  CompletionRequest request;
  auto model = j.find("model");
  if (model == j.end() || !model->is_string()) return NotA("model", "a string (the model's id)");
  request.model = model->get<std::string>();
  auto prompt = j.find("prompt");
  if (prompt == j.end()) return Bad("'prompt' is required");
  std::vector<GenerateParams> prompts;
  if (absl::Status s = ParsePrompts(*prompt, prompts); !s.ok()) return s;
  GenerateParams shared;
  if (absl::Status s = ParseShared(j, random_seed, shared); !s.ok()) return s;
  auto n = Integer(j, "n", 1);
  auto best_of = Integer(j, "best_of", n.ok() ? *n : 1);
  auto stream = Boolean(j, "stream");
  auto ids = Boolean(j, "return_token_ids");
  for (const absl::Status& s : {n.status(), best_of.status(), stream.status(), ids.status()}) {
    if (!s.ok()) return s;
  }
  if (*best_of != *n) return Bad("'best_of' is not supported (only best_of = n)");
  if (*n < 1 || *n > max_choices || static_cast<int64_t>(prompts.size()) > max_choices / *n) {
    return Bad(absl::StrCat("'n' times the number of prompts must be in [1, ", max_choices, "]"));
  }
  request.n = *n;
  request.stream = *stream;
  request.return_token_ids = *ids;
  if (auto it = j.find("stream_options"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return NotA("stream_options", "an object");
    auto usage = Boolean(*it, "include_usage");
    if (!usage.ok()) return usage.status();
    request.include_usage = *usage;
  }
  for (const GenerateParams& p : prompts) {
    for (int64_t sample = 0; sample < request.n; ++sample) {
      GenerateParams choice = shared;
      choice.prompt = p.prompt;
      choice.prompt_ids = p.prompt_ids;
      choice.sampling.seed = shared.sampling.seed + static_cast<uint64_t>(sample);
      request.choices.push_back(std::move(choice));
    }
  }
  return request;
}

nlohmann::json UsageJson(const std::vector<GenerateSummary>& summaries) {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (const GenerateSummary& s : summaries) {
    prompt += s.prompt_tokens;
    completion += s.output_tokens;
    cached += s.cached_prompt_tokens;
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

nlohmann::json CompletionJson(const CompletionHeader& header,
                              const std::vector<CompletionChoice>& choices, bool return_token_ids) {
  json list = json::array();
  std::vector<GenerateSummary> summaries;
  for (size_t i = 0; i < choices.size(); ++i) {
    json c = {{"index", i},
              {"text", choices[i].text},
              {"logprobs", nullptr},
              {"finish_reason", choices[i].summary.finish_reason}};
    if (return_token_ids) c["token_ids"] = choices[i].token_ids;
    list.push_back(std::move(c));
    summaries.push_back(choices[i].summary);
  }
  return {{"id", header.id},       {"object", "text_completion"}, {"created", header.created},
          {"model", header.model}, {"choices", std::move(list)},  {"usage", UsageJson(summaries)}};
}

nlohmann::json ChunkJson(const CompletionHeader& header, int64_t index, const std::string& text,
                         const std::vector<int>* token_ids, const std::string& finish_reason,
                         bool with_usage_null) {
  json c = {{"index", index}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (!finish_reason.empty()) c["finish_reason"] = finish_reason;
  if (token_ids != nullptr) c["token_ids"] = *token_ids;
  json chunk = {{"id", header.id},
                {"object", "text_completion"},
                {"created", header.created},
                {"model", header.model},
                {"choices", json::array({std::move(c)})}};
  if (with_usage_null) chunk["usage"] = nullptr;
  return chunk;
}

nlohmann::json UsageChunkJson(const CompletionHeader& header, const nlohmann::json& usage) {
  return {{"id", header.id},       {"object", "text_completion"}, {"created", header.created},
          {"model", header.model}, {"choices", json::array()},    {"usage", usage}};
}

std::string SseEvent(const nlohmann::json& json) {
  // Invalid UTF-8 cannot occur (token texts are whole characters or U+FFFD);
  // replace, never throw, should it.
  return absl::StrCat("data: ", json.dump(-1, ' ', false, json::error_handler_t::replace), "\n\n");
}

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

nlohmann::json ErrorJson(int http_status, absl::string_view message, absl::string_view code) {
  const char* type = http_status == 429   ? "rate_limit_error"
                     : http_status >= 500 ? "server_error"
                                          : "invalid_request_error";
  json error = {
      {"message", std::string(message)}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!code.empty()) error["code"] = std::string(code);
  return {{"error", std::move(error)}};
}

nlohmann::json ModelsJson(const std::string& id, int64_t created) {
  return {
      {"object", "list"},
      {"data",
       json::array(
           {{{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "nanoserve"}}})}};
}

}  // namespace nanoserve
