// Decode's OpenAI-compatible HTTP API, served beside its gRPC port (a
// SideServer of rpc/server_runner.h): POST /v1/completions (whole or
// streamed as server-sent events ending in "data: [DONE]"), GET /v1/models,
// GET /health. An adapter like the gRPC handler: openai_api.h turns JSON
// into DecodeStage calls and their results back into JSON; the stage does
// the validation, admission and the work.
//
// Why in nanoserve-decode and not a gateway binary: a call goes straight
// into the DecodeStage the gRPC handler uses (no second hop on every token,
// no second copy of the error mapping), and a client that goes away cancels
// its calls in the same process, so the slot and the lease are freed at the
// next step (docs/services.md).
//
// Lifetime of a request: choices are started at once; a streamed response
// waits until every choice has produced its first token or failed (so that
// bad input still gets its HTTP status, e.g. 400), then streams. A streamed
// client that goes away is noticed at the next write (a token, or an SSE
// comment sent when the stream has been idle for `heartbeat`) and every
// choice is cancelled: the slots and leases are freed at the scheduler's
// next step. A whole (non-streamed) response is written when all choices
// end; a client that leaves before that is not noticed (its calls run to
// their max_tokens).
//
// Thread safety: thread-safe; requests run on the HTTP server's threads.
#ifndef NANOSERVE_DECODE_SERVICE_OPENAI_SERVER_H_
#define NANOSERVE_DECODE_SERVICE_OPENAI_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "base/http_server.h"
#include "base/metrics.h"
#include "base/server_runner.h"
#include "decode_service/decode_stage.h"

namespace nanoserve {

struct OpenAiServerOptions {
  // host:port; port 0 picks a free one. Loopback by default.
  std::string listen = "127.0.0.1:8000";
  // The served model's id: what GET /v1/models lists and what a request's
  // "model" must name (else 404).
  std::string model_id;
  // Connections served at once (each stream holds one), waiting ones, the
  // body bound (413 beyond it) and timeouts. A write that blocks longer
  // than http.write_timeout (a client that stopped reading) ends the stream
  // and cancels its calls.
  HttpServerOptions http;
  // Choices per request (prompts x n), at most.
  int64_t max_choices = 16;
  // Deadline of each request's calls.
  absl::Duration timeout = absl::Minutes(10);
  // An idle stream gets an SSE comment (": keep-alive") this often, so that
  // a client that went away is noticed while no token comes.
  absl::Duration heartbeat = absl::Seconds(1);
};

class OpenAiServer final : public SideServer {
 public:
  // `stage` and `metrics` are not owned; `metrics` may be null.
  OpenAiServer(DecodeStage* stage, const OpenAiServerOptions& options, MetricsRegistry* metrics);
  // Stop(now) if still serving.
  ~OpenAiServer() override;

  absl::StatusOr<int> Start() override;
  void Drain() override;
  void Stop(absl::Time deadline) override;

  class InFlight;  // one request's calls (openai_server.cc)

 private:
  void Completions(const std::string& body, httplib::Response& res);
  // Counts the response's code (nanoserve_decode_http_requests_total).
  void Count(int http_status);
  void Register(InFlight* request);
  void Unregister(InFlight* request);

  DecodeStage* const stage_;
  const OpenAiServerOptions options_;
  MetricsRegistry* const metrics_;
  const int64_t created_;  // Unix seconds, for /v1/models
  HttpServer http_;
  bool started_ = false;
  std::atomic<bool> draining_{false};

  std::mutex mu_;
  std::condition_variable idle_;             // requests_ became empty
  absl::flat_hash_set<InFlight*> requests_;  // guarded by mu_
};

}  // namespace nanoserve

#endif  // NANOSERVE_DECODE_SERVICE_OPENAI_SERVER_H_
