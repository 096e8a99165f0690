// OpenAI's completions API (POST /v1/completions) in DecodeStage terms: a
// request body parsed into one GenerateParams per choice, and the stage's
// tokens and summaries written back as OpenAI's JSON (a whole response, or
// server-sent-event chunks), errors in OpenAI's shape with their HTTP codes.
//
// Only the request's shape is checked here: JSON types, which fields exist
// and which are supported. Its values (prompt length, token ids, max_tokens,
// sampling ranges, stop strings) are checked by DecodeStage, the same checks
// as for gRPC, and come back as INVALID_ARGUMENT (HTTP 400).
//
// Fields: model (required, the served model's id), prompt (a string, an
// array of strings, an array of token ids or an array of such arrays),
// max_tokens (16), temperature (1, as OpenAI's), top_p (1), seed (random
// when absent), stop (a string or up to 4), n (1), stream, stream_options
// .include_usage, user (ignored); defaults of OpenAI's other fields
// (logprobs, echo, best_of, suffix, logit_bias, presence_penalty,
// frequency_penalty) are accepted, other values are refused. Extensions,
// as vLLM spells them: top_k, ignore_eos, return_token_ids, cache_salt (the
// cache namespace of GenerateParams).
//
// Choices: prompts x n, choice i is prompt i / n's sample i % n; each is its
// own DecodeStage call (a scheduler slot, counted by decode's admission),
// and with a seed S sample j draws with seed S + j.
//
// Thread safety: functions only; thread-safe.
#ifndef NANOSERVE_DECODE_SERVICE_OPENAI_API_H_
#define NANOSERVE_DECODE_SERVICE_OPENAI_API_H_

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "decode_service/decode_stage.h"

namespace nanoserve {

struct CompletionRequest {
  std::string model;
  std::vector<GenerateParams> choices;  // prompts x n
  int64_t n = 1;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool return_token_ids = false;  // each choice (or chunk) also carries token_ids
};

// INVALID_ARGUMENT naming the first problem with the body's shape; choices
// beyond `max_choices` (prompts x n) are refused too. `random_seed` is the
// seed of requests that give none.
absl::StatusOr<CompletionRequest> ParseCompletionRequest(absl::string_view body,
                                                         int64_t max_choices, uint64_t random_seed);

// What one choice produced, for the whole (not streamed) response.
struct CompletionChoice {
  std::string text;  // token texts + trailing text
  std::vector<int> token_ids;
  GenerateSummary summary;
};

// Identifies one response: its id ("cmpl-..."), creation time and model.
struct CompletionHeader {
  std::string id;
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// {"prompt_tokens", "completion_tokens", "total_tokens",
//  "prompt_tokens_details": {"cached_tokens"}} summed over the choices; a
// prompt shared by n choices counts once per choice, as OpenAI counts it.
nlohmann::json UsageJson(const std::vector<GenerateSummary>& summaries);

// The whole response: object "text_completion", one entry per choice.
nlohmann::json CompletionJson(const CompletionHeader& header,
                              const std::vector<CompletionChoice>& choices, bool return_token_ids);

// One streamed chunk for choice `index`: `text` (and `token_ids`, when
// asked for), finish_reason null until the last chunk of that choice.
// `with_usage_null` adds "usage": null (stream_options.include_usage).
nlohmann::json ChunkJson(const CompletionHeader& header, int64_t index, const std::string& text,
                         const std::vector<int>* token_ids, const std::string& finish_reason,
                         bool with_usage_null);

// The last chunk when usage is asked for: no choices, the usage.
nlohmann::json UsageChunkJson(const CompletionHeader& header, const nlohmann::json& usage);

// `json` as one server-sent event: "data: <json>\n\n".
std::string SseEvent(const nlohmann::json& json);
// The stream's end: "data: [DONE]\n\n".
inline constexpr absl::string_view kSseDone = "data: [DONE]\n\n";

// The HTTP status for a status code: INVALID_ARGUMENT 400, NOT_FOUND 404,
// RESOURCE_EXHAUSTED 429, CANCELLED 499, UNAVAILABLE 503,
// DEADLINE_EXCEEDED 504, anything else 500.
int HttpStatusFor(const absl::Status& status);

// {"error": {"message", "type", "param": null, "code"}} for `status`
// (`http_status` picks the type: invalid_request_error for 4xx,
// server_error for 5xx); `code` may be empty (null).
nlohmann::json ErrorJson(int http_status, absl::string_view message, absl::string_view code = "");

// GET /v1/models: one model, `id`, created at `created` (Unix seconds).
nlohmann::json ModelsJson(const std::string& id, int64_t created);

}  // namespace nanoserve

#endif  // NANOSERVE_DECODE_SERVICE_OPENAI_API_H_
