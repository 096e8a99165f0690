// The client side of decode's OpenAI-compatible HTTP API
// (decode_service/openai_api.h): one streamed completion (POST
// /v1/completions, "stream": true, server-sent events), chunk by chunk, and
// the served model's id (GET /v1/models). `nanoserve bench-services
// --front_door` and `nanoserve load --http` call through it.
//
// Thread safety: functions only; an httplib::Client is used by one call at a
// time.
#ifndef NANOSERVE_CLIENT_OPENAI_CLIENT_H_
#define NANOSERVE_CLIENT_OPENAI_CLIENT_H_

#include <httplib.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace nanoserve {

// What a streamed completion sent, summed over its chunks.
struct StreamedCompletion {
  std::vector<int> token_ids;  // the chunks' token_ids (asked for by return_token_ids)
  std::string text;
  std::string finish_reason;  // of the last choice that gave one
  // The usage chunk's (stream_options.include_usage); null when none came.
  nlohmann::json usage;
};

// A client of http://`host_port` with kept-alive connections.
// (nanoserve_httplib compiles httplib.h with the definitions Debian's
// library was built with, so the class has the library's layout: a client
// may live anywhere.)
std::unique_ptr<httplib::Client> NewHttpClient(const std::string& host_port);

// The body of a greedy streamed completion of `max_tokens` tokens that end
// of text does not stop, with token ids and usage in the stream: what
// benchmarks send. `prompt` is a string or an array of token ids.
nlohmann::json GreedyStreamBody(const std::string& model, const nlohmann::json& prompt,
                                int64_t max_tokens);

// POSTs `body` (which should ask for "stream": true) to /v1/completions
// and reads its "data:" events to the end. `on_chunk` (optional) sees each
// chunk's token ids (empty for a chunk without any), when it arrived;
// returning false hangs up. `deadline` bounds the whole call.
// Errors: the response's HTTP code as a status code (400 INVALID_ARGUMENT,
// 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 504
// DEADLINE_EXCEEDED, other UNKNOWN) with its body; UNAVAILABLE when no
// response came (httplib's error); DEADLINE_EXCEEDED past `deadline`;
// CANCELLED when `on_chunk` hung up.
absl::StatusOr<StreamedCompletion> StreamCompletion(
    httplib::Client& http, const nlohmann::json& body, absl::Time deadline,
    const std::function<bool(const std::vector<int>& token_ids, absl::Time arrived)>& on_chunk =
        nullptr);

// The id of the first model GET /v1/models lists (the served model name).
absl::StatusOr<std::string> ServedModelId(httplib::Client& http);

}  // namespace nanoserve

#endif  // NANOSERVE_CLIENT_OPENAI_CLIENT_H_
