// How `nanoserve load` sends one request: decode's gRPC Generate stream or
// its OpenAI-compatible HTTP API (POST /v1/completions, streamed), each
// greedy, asking for exactly the request's max_tokens (end of text does not
// stop it), and reporting when each token arrived.
//
// Thread safety: Send may be called from many threads at once.
#ifndef NANOSERVE_BENCH_LOAD_CLIENT_H_
#define NANOSERVE_BENCH_LOAD_CLIENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/security/credentials.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/load_stats.h"
#include "bench/load_workload.h"

namespace nanoserve {

// One completed call.
struct LoadResponse {
  std::vector<absl::Time> token_times;  // one per output token, in order
  int64_t prompt_tokens = 0;            // the server's usage; 0 if it sent none
  int64_t cached_prompt_tokens = 0;
  std::optional<ServerTimings> server;  // decode's Finished timings (gRPC only)
};

class LoadClient {
 public:
  virtual ~LoadClient() = default;
  // Sends `prompt` in the cache namespace `cache_salt` ("" = shared) and
  // reads the answer to its end, by `deadline`. The call's error otherwise
  // (DEADLINE_EXCEEDED past the deadline).
  virtual absl::StatusOr<LoadResponse> Send(const LoadPrompt& prompt, const std::string& cache_salt,
                                            absl::Time deadline) = 0;
  // "grpc HOST:PORT" or "http HOST:PORT (model M)", for the report.
  virtual std::string Describe() const = 0;
};

// Generate calls on one channel to `target` (host:port) over `credentials`
// (null: plaintext).
std::unique_ptr<LoadClient> MakeGrpcLoadClient(
    const std::string& target, std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

// Streamed completions to http://`target` (host:port), each on a kept-alive
// connection of a pool, for `model` ("" = the first of GET /v1/models).
// UNAVAILABLE when the model list cannot be read.
absl::StatusOr<std::unique_ptr<LoadClient>> MakeHttpLoadClient(const std::string& target,
                                                               const std::string& model);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_LOAD_CLIENT_H_
