// The wiring every nanoserve service binary shares (nanoserve-kv-store,
// nanoserve-prefill, nanoserve-decode): the flags they all take, each
// service's own defaults for them, and what is built from them.
//
// Flags defined in service_main.cc, so every binary that links this target
// takes them:
//   --listen, --metrics_listen, --port_file, --max_message_mb,
//   --shutdown_grace_s                                           the server
//   --tls_cert, --tls_key, --tls_ca     mutual TLS (rpc/tls.h): the server's
//                                       and the channels to its peers'
// $NANOSERVE_LISTEN_HOST, when set, is the host of the default --listen and
// --metrics_listen addresses in place of 127.0.0.1 (the images set 0.0.0.0).
//   --model, --seed, --device, --dtype, --attention              the model
// The KV store reads only the model's shape (and --device, --dtype for its
// pool); prefill and decode load it. The stages that call the store take its
// client's flags from rpc/store_client_flags.h; a service's own flags stay in
// its main.cc.
//
// A main() calls InitService first, then builds its service from the
// *FromFlags() functions below and serves (rpc/server_runner.h).
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

namespace nanoserve {

// What a service binary tells the shared wiring about itself.
struct ServiceInfo {
  // The binary's name, e.g. "nanoserve-prefill": ServerOptions::name, the
  // prefix of its error lines, and the first line of --help.
  std::string name;
  // This service's default --listen (gRPC) address, e.g. "127.0.0.1:50052";
  // InitService puts $NANOSERVE_LISTEN_HOST in place of its host where set.
  std::string listen;
  // This service's default --metrics_listen (HTTP /metrics) address.
  std::string metrics_listen;
  // This service's default --model; empty: the engines' default
  // (DefaultModelSpec(), resolved when the flag is read).
  std::string model;
};

// Blocks SIGTERM and SIGINT for ServeUntilSignal (BlockTerminationSignals),
// sets `info`'s defaults of the shared flags, makes --help list the flags
// this binary takes (its main.cc's and the shared ones; a default set here
// shows as "currently"), and parses argv. Exits as absl's parser does on an
// unknown flag, a bad value or --help; exits 2 with a message on a value
// out of range or half-configured or unreadable TLS files.
// REQUIRES: called once, first in main, before any thread starts.
void InitService(int argc, char** argv, const ServiceInfo& info);

// The server of this service: its name, --listen, --metrics_listen,
// --port_file, --max_message_mb, --shutdown_grace_s and its TLS credentials.
ServerOptions ServerOptionsFromFlags();

// The credentials from --tls_cert, --tls_key, --tls_ca, loaded by
// InitService: mutual TLS, or plaintext when none is set.
const TransportCredentials& CredentialsFromFlags();

// --max_message_mb in bytes: the bound on every message this service sends
// or receives, on its server and on its channels to other services.
int64_t MaxMessageBytesFromFlags();

// A stub of `Service` (a generated gRPC service) on a channel to the peer at
// `target` with this service's message bound and credentials; nullptr when
// `target` is empty (no such peer).
template <typename Service>
std::unique_ptr<typename Service::Stub> PeerStub(const std::string& target) {
  if (target.empty()) return nullptr;
  return Service::NewStub(
      MakeChannel(target, MaxMessageBytesFromFlags(), CredentialsFromFlags().channel));
}

// --device, --dtype and --attention. INVALID_ARGUMENT naming a value that is
// not one of the choices; UNAVAILABLE for cuda without a GPU.
absl::StatusOr<ModelOptions> ModelOptionsFromFlags();

// --model, or DefaultModelSpec() when it is empty.
std::string ModelSpecFromFlags();

// The shape of the --model model, without loading its weights (the KV store
// sizes its pages from it). Errors: those of LoadModelConfig.
absl::StatusOr<Gpt2Config> ModelConfigFromFlags();

// Loads the --model model with ModelOptionsFromFlags() and --seed, and logs
// its description on stderr. Errors: those of ModelOptionsFromFlags and
// LoadModel.
absl::StatusOr<LoadedModel> LoadModelFromFlags();

// Prints "<name>: <status>" on stderr and returns `exit_code`, for
// `return ServiceError(status);` in a main.
int ServiceError(const absl::Status& status, int exit_code = 2);

}  // namespace nanoserve

#endif  // NANOSERVE_RPC_SERVICE_MAIN_H_
