#include "client/openai_client.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace nanoserve {
namespace {

using nlohmann::json;

absl::StatusCode CodeForHttp(int http_status) {
  switch (http_status) {
    case 400:
      return absl::StatusCode::kInvalidArgument;
    case 404:
      return absl::StatusCode::kNotFound;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 503:
      return absl::StatusCode::kUnavailable;
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      return absl::StatusCode::kUnknown;
  }
}

// Adds one "data: {...}" event's choices and usage to `out`; the chunk's
// token ids into `ids`.
void AddChunk(absl::string_view event, StreamedCompletion& out, std::vector<int>& ids) {
  if (!absl::ConsumePrefix(&event, "data: ") || event == "[DONE]") return;
  const json chunk = json::parse(event.begin(), event.end(), nullptr, false);
  if (!chunk.is_object()) return;
  if (auto usage = chunk.find("usage"); usage != chunk.end() && usage->is_object()) {
    out.usage = *usage;
  }
  for (const json& c : chunk.value("choices", json::array())) {
    for (const json& id : c.value("token_ids", json::array())) ids.push_back(id.get<int>());
    if (auto text = c.find("text"); text != c.end() && text->is_string()) out.text += *text;
    if (auto reason = c.find("finish_reason"); reason != c.end() && reason->is_string()) {
      out.finish_reason = *reason;
    }
  }
}

}  // namespace

std::unique_ptr<httplib::Client> NewHttpClient(const std::string& host_port) {
  auto http = std::make_unique<httplib::Client>(absl::StrCat("http://", host_port));
  http->set_keep_alive(true);
  // A request goes out in two writes (headers, then body): with Nagle's
  // algorithm the body waits for the server's delayed ACK of the headers,
  // 40 ms on Linux, which the time to first token then measured.
  http->set_tcp_nodelay(true);
  return http;
}

json GreedyStreamBody(const std::string& model, const json& prompt, int64_t max_tokens) {
  return {{"model", model},           {"prompt", prompt},
          {"max_tokens", max_tokens}, {"temperature", 0},
          {"ignore_eos", true},       {"stream", true},
          {"return_token_ids", true}, {"stream_options", {{"include_usage", true}}}};
}

absl::StatusOr<StreamedCompletion> StreamCompletion(
    httplib::Client& http, const json& body, absl::Time deadline,
    const std::function<bool(const std::vector<int>&, absl::Time)>& on_chunk) {
  const auto left = std::max<int64_t>(absl::ToInt64Milliseconds(deadline - absl::Now()), 1);
  http.set_connection_timeout(std::chrono::milliseconds(left));
  http.set_read_timeout(std::chrono::milliseconds(left));
  StreamedCompletion out;
  std::string buffer;  // bytes not yet split into events
  std::string error_body;
  bool hung_up = false, late = false;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    const absl::Time now = absl::Now();
    if (error_body.size() < 4096) error_body.append(data, std::min<size_t>(size, 4096));
    buffer.append(data, size);
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      std::vector<int> ids;
      AddChunk(absl::string_view(buffer.data(), end), out, ids);
      buffer.erase(0, end + 2);
      out.token_ids.insert(out.token_ids.end(), ids.begin(), ids.end());
      if (on_chunk && !on_chunk(ids, now)) hung_up = true;
    }
    late = now > deadline;
    return !hung_up && !late;
  };
  httplib::Result res = http.send(req);
  if (hung_up) return absl::CancelledError("the client hung up");
  if (late || absl::Now() > deadline) {
    return absl::DeadlineExceededError("HTTP completion: deadline exceeded");
  }
  if (!res) {
    return absl::UnavailableError(
        absl::StrCat("HTTP completion: no response (", httplib::to_string(res.error()), ")"));
  }
  if (res->status != 200) {
    return absl::Status(CodeForHttp(res->status),
                        absl::StrCat("HTTP ", res->status, ": ", error_body));
  }
  return out;
}

absl::StatusOr<std::string> ServedModelId(httplib::Client& http) {
  httplib::Result res = http.Get("/v1/models");
  if (!res) {
    return absl::UnavailableError(
        absl::StrCat("GET /v1/models: no response (", httplib::to_string(res.error()), ")"));
  }
  const json models = json::parse(res->body, nullptr, false);
  if (res->status != 200 || !models.is_object() || !models.contains("data") ||
      !models["data"].is_array() || models["data"].empty() ||
      !models["data"][0].value("id", json()).is_string()) {
    return absl::Status(CodeForHttp(res->status),
                        absl::StrCat("GET /v1/models: HTTP ", res->status, ": ", res->body));
  }
  return models["data"][0]["id"].get<std::string>();
}

}  // namespace nanoserve
