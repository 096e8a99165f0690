// The wiring every nanoserve service binary shares (nanoserve-kv-store,
// nanoserve-prefill, nanoserve-decode): the flags they all take, each
// service's own defaults for them, and what is built from them.
//
// Flags defined in service_main.cc, so every binary that links this target
// takes them (ServiceOptions, options/service_options.h, holds them with
// their defaults):
//   --listen, --metrics_listen, --port_file, --max_message_mb,
//   --shutdown_grace_s                                           the server
//   --tls_cert, --tls_key, --tls_ca     mutual TLS (base/tls.h): the server's
//                                       and the channels to its peers'
//   --model, --seed, --device, --dtype, --attention              the model
// $NANOSERVE_LISTEN_HOST, when set, is the host of the default --listen and
// --metrics_listen addresses in place of 127.0.0.1 (the images set 0.0.0.0).
// The KV store reads only the model's shape (and --device, --dtype for its
// pool) and fingerprint; prefill and decode load it. All three name their
// model's fingerprint to each other and refuse another's
// (ModelIdentityFor, base/model_identity.h). The stages that call the store take its
// client's flags from kv_store/client/store_client_flags.h; a service's own
// flags are in its <service>_flags.cc, read into its options struct
// (options/<service>_options.h). A main.cc defines no flags.
//
// A main() calls InitService first, then reads its options struct from the
// flags (<Service>OptionsFromFlags), builds its service from it with the
// functions below and serves (base/server_runner.h).
//
// Thread safety: InitService must run once, first thing in main, before any
// thread starts; after it the other functions may be called from any thread.
#ifndef NANOSERVE_RPC_SERVICE_MAIN_H_
#define NANOSERVE_RPC_SERVICE_MAIN_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/server_runner.h"
#include "base/tls.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/model_loader.h"
#include "options/service_options.h"

namespace nanoserve {

// Blocks SIGTERM and SIGINT for ServeUntilSignal (BlockTerminationSignals),
// sets `info`'s defaults of the shared flags (ServiceOptions(info)'s), makes
// --help list the flags this binary takes (those of its *_flags.cc files and
// rpc/service_main.cc; a default set here shows as "currently"), and parses
// argv. Exits as absl's parser does on an unknown flag, a bad value or
// --help; exits 2 with a message on a value out of range, a --listen or
// --metrics_listen that is no address, or half-configured or unreadable TLS
// files.
// REQUIRES: called once, first in main, before any thread starts.
void InitService(int argc, char** argv, const ServiceInfo& info);

// The flags of rpc/service_main.cc (the server, TLS, the model) as parsed.
ServiceOptions ServiceOptionsFromFlags();

// The server of this service: its name (InitService's), `service`'s
// addresses, port file, message bound and grace period, and the credentials
// InitService loaded.
ServerOptions ServerOptionsFor(const ServiceOptions& service);

// The credentials from --tls_cert, --tls_key, --tls_ca, loaded by
// InitService: mutual TLS, or plaintext when none is set.
const TransportCredentials& CredentialsFromFlags();

// `service.max_message_mb` in bytes: the bound on every message this service
// sends or receives, on its server and on its channels to other services.
int64_t MaxMessageBytes(const ServiceOptions& service);

// A stub of `Service` (a generated gRPC service) on a channel to the peer at
// `target` with `service`'s message bound and the credentials InitService
// loaded; nullptr when `target` is empty (no such peer).
template <typename Service>
std::unique_ptr<typename Service::Stub> PeerStub(const std::string& target,
                                                 const ServiceOptions& service) {
  if (target.empty()) return nullptr;
  return Service::NewStub(
      MakeChannel(target, MaxMessageBytes(service), CredentialsFromFlags().channel));
}

// `model`'s device, dtype and attention. INVALID_ARGUMENT naming a value that
// is not one of the choices; UNAVAILABLE for cuda without a GPU.
absl::StatusOr<ModelOptions> ModelOptionsFor(const ServiceModel& model);

// `model.spec`, or DefaultModelSpec() when it is empty.
std::string ModelSpecFor(const ServiceModel& model);

// The shape of `model`, without loading its weights (the KV store sizes its
// pages from it). Errors: those of LoadModelConfig.
absl::StatusOr<Gpt2Config> ModelConfigFor(const ServiceModel& model);

// `model`'s fingerprint (engine/model_fingerprint.h of its spec and seed):
// the identity this service names to its peers and checks theirs against
// (base/model_identity.h). "" when the model's files cannot be read, with a
// line on stderr saying its peers' models are then not checked.
std::string ModelIdentityFor(const ServiceModel& model);

// Loads `model` (ModelOptionsFor(model), its seed) and logs its description
// on stderr. Errors: those of ModelOptionsFor and LoadModel.
absl::StatusOr<LoadedModel> LoadServiceModel(const ServiceModel& model);

// Prints "<name>: <status>" on stderr and returns `exit_code`, for
// `return ServiceError(status);` in a main.
int ServiceError(const absl::Status& status, int exit_code = 2);

}  // namespace nanoserve

#endif  // NANOSERVE_RPC_SERVICE_MAIN_H_
