// The command lines of the service binaries as option structs: what every
// binary takes (ServiceOptions: the server, TLS, the model) and what the
// stages that call the KV store take (StoreClientOptions). Each service's own
// struct (KvStoreOptions, PrefillOptions, DecodeOptions, in
// options/<service>_options.h) holds these and the service's own flags.
//
// Every field is one flag, in the flag's own units and spelling, with the
// flag's default: the flags are defined with these defaults, so the struct is
// the one place a default is written. Each struct has one FromFlags, in the
// file that defines its flags and linked only into the binary
// (rpc/service_main.h, kv_store/client/store_client_flags.h,
// <service>/<service>_flags.h), and one ToArgv, here, linked wherever a
// binary is started (client/service_client.h's ServiceStack, which
// `nanoserve serve`, bench-services and the integration tests use). So
// FromFlags(parse(ToArgv(options))) == options, flag for flag:
// tests/services/*_options_test.cc prove it for every flag each binary
// defines, and fail on a flag ToArgv leaves out.
//
// Plain data: no flags, no engine, no gRPC. Thread safety: none needed.
#ifndef NANOSERVE_OPTIONS_SERVICE_OPTIONS_H_
#define NANOSERVE_OPTIONS_SERVICE_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

// What a service binary tells the shared wiring about itself.
struct ServiceInfo {
  // The binary's name, e.g. "nanoserve-prefill": ServerOptions::name, the
  // prefix of its error lines, and the first line of --help.
  std::string name;
  // This service's default --listen (gRPC) address, e.g. "127.0.0.1:50052";
  // $NANOSERVE_LISTEN_HOST replaces its host where set.
  std::string listen;
  // This service's default --metrics_listen (HTTP /metrics) address.
  std::string metrics_listen;
  // This service's default --model; empty: the engines' default
  // (DefaultModelSpec(), resolved when the model is loaded).
  std::string model;
};

// The model every service runs. All three must be given the same spec and
// seed (they refuse each other's K/V otherwise, base/model_identity.h); the
// KV store reads only the model's shape and fingerprint (and device and
// dtype, for its pool).
struct ServiceModel {
  // --model: checkpoint dir, .safetensors file or random:<preset>; empty:
  // $NANOSERVE_MODEL, ./models/gpt2, else random:gpt2.
  std::string spec;
  uint64_t seed = 0;                // --seed of random weights
  std::string device = "cpu";       // --device: cpu or cuda
  std::string dtype = "fp32";       // --dtype: fp32, bf16 or fp16
  std::string attention = "naive";  // --attention: naive or fused

  // --model, --seed, --device, --dtype, --attention, in that order.
  std::vector<std::string> ToArgv() const;
};

// The flags every service binary takes (defined in rpc/service_main.cc).
struct ServiceOptions {
  // Listen and metrics addresses empty, every other field its default.
  ServiceOptions() = default;
  // The defaults of the service `info` describes: its --listen and
  // --metrics_listen (host: DefaultListenHost()) and its --model.
  explicit ServiceOptions(const ServiceInfo& info);

  std::string listen;          // --listen: gRPC address, host:port (port 0 = any)
  std::string metrics_listen;  // --metrics_listen: /metrics address; empty = off
  std::string port_file;       // --port_file: the ports are written here once serving
  int64_t max_message_mb = 8;  // --max_message_mb: largest gRPC message
  // --shutdown_grace_s: after SIGTERM, seconds calls in flight may take
  // before they are cancelled.
  int64_t shutdown_grace_s = 5;
  // --tls_cert, --tls_key, --tls_ca: mutual TLS (base/tls.h); all three or
  // none (plaintext).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;
  ServiceModel model;  // --model, --seed, --device, --dtype, --attention

  std::vector<std::string> ToArgv() const;
};

// The KV store client of the stages that call the store (prefill, decode);
// the flags are defined in kv_store/client/store_client_flags.cc.
struct StoreClientOptions {
  // --kv_store: the store's address; empty = no store (prompts are computed
  // in full).
  std::string kv_store = "127.0.0.1:50051";
  int64_t store_timeout_ms = 10000;  // --store_timeout_ms: deadline of each store call
  int64_t chunk_kb = 1024;           // --chunk_kb: page bytes per Put chunk, asked of Fetch
  // --kv_transport: how pages cross to and from the store: auto (its pool
  // mapped in place when on its host and allowed), cuda_ipc, shm or bytes.
  std::string kv_transport = "auto";

  std::vector<std::string> ToArgv() const;
};

// "--name=value", as every ToArgv spells a flag; a bool as true or false.
template <typename T>
std::string FlagArg(absl::string_view name, const T& value) {
  return absl::StrCat("--", name, "=", value);
}
std::string FlagArg(absl::string_view name, bool value);

// Appends `more` to `argv`.
void AppendArgv(const std::vector<std::string>& more, std::vector<std::string>* argv);

}  // namespace nanoserve

#endif  // NANOSERVE_OPTIONS_SERVICE_OPTIONS_H_
