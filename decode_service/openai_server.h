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
// Lifetime of a request: choices are started at once and no thread waits for
// them: their events drive the response (rpc/http_server.h's HttpResponder).
// A streamed response starts when every choice has produced its first token
// or one failed (so that bad input still gets its HTTP status, e.g. 400),
// then writes each token as an SSE event as it comes. A whole response is
// written when all choices end. A client that closes its connection before
// its response was sent, streamed or not, cancels every choice at once: the
// slots and leases are freed at the scheduler's next step.
//
// Who may call it. With options.api_key set, /v1/completions and /v1/models
// need "Authorization: Bearer <key>" (vLLM's --api-key, what OpenAI clients
// send): 401 with OpenAI's error shape otherwise, before the body is read
// for anything else; /health answers anyone (probes). The API listens beyond
// loopback only with a key, or with options.allow_insecure set by an operator
// who guards it otherwise (a NetworkPolicy, a gateway): CheckHttpGuard.
// Admission is the stage's, shared fairly between callers: an HTTP caller
// is its client address (as a plaintext gRPC caller is), so one client
// holds at most --max_tokens_in_flight_per_caller of work and gets 429
// beyond it while others are served. Behind a proxy every client is the
// proxy's address: one caller.
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
  // Connections (503 beyond them), the body bound (413 beyond it) and
  // timeouts. A stream whose client stops reading for http.idle_timeout is
  // closed and its calls cancelled.
  HttpServerOptions http;
  // Choices per request (prompts x n), at most.
  int64_t max_choices = 16;
  // Deadline of each request's calls.
  absl::Duration timeout = absl::Minutes(10);
  // Non-empty: the bearer token every /v1/ request must present.
  std::string api_key;
  // Listen beyond loopback without an api_key (see CheckHttpGuard).
  bool allow_insecure = false;
};

// OK if `options` may serve: `listen` is loopback (base/server_runner.h
// IsLoopbackAddress), or an api_key is set, or allow_insecure. Else
// FAILED_PRECONDITION saying what to do; Start refuses the same.
absl::Status CheckHttpGuard(const OpenAiServerOptions& options);

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
  void Completions(const HttpRequest& request, std::shared_ptr<HttpResponder> responder);
  // True if `request` carries the api key (or none is needed).
  bool Authorized(const HttpRequest& request) const;
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
