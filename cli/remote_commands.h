// The `nanoserve` subcommands that talk to the services: generate --target,
// stats and serve (bench-services is bench/services_bench.h). Flags live in
// cli/<command>_main.cc.
#ifndef NANOSERVE_CLI_REMOTE_COMMANDS_H_
#define NANOSERVE_CLI_REMOTE_COMMANDS_H_

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>

#include "absl/time/time.h"
#include "cli/commands.h"
#include "client/mps_daemon.h"
#include "client/service_client.h"

namespace nanoserve {

// Streams from the decode service at `target`, over `credentials`
// (base/tls.h; null: plaintext): text as it arrives, then a summary on
// stderr (or one JSON object with --json). One prompt.
int RunRemoteGenerate(const GenerateCommandOptions& options, const std::string& target,
                      absl::Duration timeout,
                      std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

// The KV store's Stats at `target`, as JSON.
int RunStats(const std::string& target,
             std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

// Starts the three services on loopback (fixed ports in `stack`), prints
// their addresses; with a prompt in `generate`, sends it through them and
// exits; otherwise serves until SIGINT/SIGTERM. With `mps` (may be null) an
// MPS daemon serve started on its own: if the services do not start under
// it, it is quit and they start again without it.
int RunServe(const ServiceStackOptions& stack, const GenerateCommandOptions& generate,
             std::unique_ptr<MpsDaemon>* mps = nullptr);

}  // namespace nanoserve

#endif  // NANOSERVE_CLI_REMOTE_COMMANDS_H_
