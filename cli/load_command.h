// `nanoserve load`: the load generator (bench/load_sweep.h) against a
// running decode service, over gRPC or its OpenAI-compatible HTTP API.
// Flags live in cli/load_main.cc; lists and lengths arrive as strings.
#ifndef NANOSERVE_CLI_LOAD_COMMAND_H_
#define NANOSERVE_CLI_LOAD_COMMAND_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>

#include "bench/load_sweep.h"

namespace nanoserve {

struct LoadCommandOptions {
  std::string target;  // --target HOST:PORT: decode's gRPC, or its HTTP API with --http
  bool http = false;
  std::string model;  // --model: the HTTP body's model ("" = GET /v1/models)
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // gRPC; null = plaintext
  double rate = std::numeric_limits<double>::infinity();  // --rate
  std::string rates;               // --rates "1,2,4" (wins over rate when set)
  std::string prompt_len = "128";  // --prompt_len N or A:B
  std::string output_len = "128";  // --output_len N or A:B
  // The rest: requests, vocab, shared prefix, file, seed; concurrency,
  // timeout, cache salt; SLO; CSV and plot paths. Rates and lengths are
  // filled from the strings above.
  LoadSweepOptions sweep;
};

// Returns the exit code: 0, 2 for bad flags, 1 when the run could not be
// made (no service, a file not written); failed requests do not fail it.
int RunLoadCommand(const LoadCommandOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_CLI_LOAD_COMMAND_H_
