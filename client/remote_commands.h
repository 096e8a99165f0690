// The `nanoserve` subcommands that talk to the services: generate --target,
// stats, serve, and bench-services. Flags live in main.cc.
#ifndef NANOSERVE_CLIENT_REMOTE_COMMANDS_H_
#define NANOSERVE_CLIENT_REMOTE_COMMANDS_H_

#include <string>

#include "absl/time/time.h"
#include "client/commands.h"
#include "client/service_client.h"

namespace nanoserve {

// Streams from the decode service at `target`: text as it arrives, then a
// summary on stderr (or one JSON object with --json). One prompt.
int RunRemoteGenerate(const GenerateCommandOptions& options, const std::string& target,
                      absl::Duration timeout);

// The KV store's Stats at `target`, as JSON.
int RunStats(const std::string& target);

// Starts the three services on loopback (fixed ports in `stack`), prints
// their addresses; with a prompt in `generate`, sends it through them and
// exits; otherwise serves until SIGINT/SIGTERM.
int RunServe(const ServiceStackOptions& stack, const GenerateCommandOptions& generate);

struct BenchServicesOptions {
  ServiceStackOptions stack;        // the services to start
  std::string attention = "naive";  // of the offline engine
  std::vector<int64_t> prompt_lengths = {16, 128, 512};
  int64_t max_new_tokens = 32;
  int64_t repeats = 3;  // per row; the median is printed
};
// TTFT and time per output token, offline engine vs services (cold and
// prefix-cached prompt), and the KV handoff rate; prints a Markdown table.
int RunBenchServices(const BenchServicesOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_CLIENT_REMOTE_COMMANDS_H_
