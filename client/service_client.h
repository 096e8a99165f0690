// Client-side pieces of the services, shared by the `nanoserve` command, the
// service benchmark and the integration tests:
//  - GreedyRequest, StreamGenerate: one Generate call on the decode service,
//    token by token;
//  - ServiceStack: the three service binaries started as child processes on
//    loopback, waited for until healthy, stopped with SIGTERM.
#ifndef NANOSERVE_CLIENT_SERVICE_CLIENT_H_
#define NANOSERVE_CLIENT_SERVICE_CLIENT_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/security/credentials.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/subprocess.h"
#include "nanoserve/v1/decode.grpc.pb.h"
#include "options/decode_options.h"
#include "options/kv_store_options.h"
#include "options/prefill_options.h"
#include "options/service_options.h"

namespace nanoserve {

struct GenerateOutcome {
  std::vector<int> output_ids;
  std::string text;           // token texts + trailing_text
  v1::Finished finished;      // valid when the call succeeded
  double client_ttft_ms = 0;  // call start to the first token, as the client saw it
  double client_total_ms = 0;
};

// A Generate request for `prompt_ids` that makes exactly `max_new_tokens`
// tokens (end of text does not stop it), greedy: what benchmarks and tests
// send.
v1::GenerateRequest GreedyRequest(const std::vector<int>& prompt_ids, int64_t max_new_tokens);

// Runs Generate to the end. `on_token` (optional) sees each token as it
// arrives; returning false cancels the call (the result is then CANCELLED).
// The call's gRPC status as an absl::Status on failure.
absl::StatusOr<GenerateOutcome> StreamGenerate(
    v1::Decode::StubInterface& stub, const v1::GenerateRequest& request, absl::Duration timeout,
    const std::function<bool(const v1::Token&)>& on_token = nullptr);

struct ServiceStackOptions {
  // The model random:gpt2 and the KV store's pool_mb 512; everything else
  // the binaries' defaults.
  ServiceStackOptions();

  // Directory of nanoserve-kv-store, nanoserve-prefill, nanoserve-decode.
  std::string bin_dir;
  // Where the services write their logs and port files; made if missing.
  std::string work_dir;
  // The model of all three services.
  ServiceModel model;
  // Fixed ports, or 0 to let each service pick a free one.
  int kv_store_port = 0;
  int prefill_port = 0;
  int decode_port = 0;
  bool metrics = true;  // metrics pages on free ports
  // Decode's OpenAI-compatible HTTP API (--http_listen, on the host of
  // --listen): this port, 0 for a free one, -1 for none.
  int http_port = 0;
  // Each service's options (options/<service>_options.h), every flag it
  // takes. ServiceArgv sets what the stack decides (above) over them: the
  // server's addresses and port file, the model, the addresses of the
  // services each calls, decode's --http_listen.
  KvStoreOptions kv_store;
  PrefillOptions prefill;
  DecodeOptions decode;
  // Extra flags per service, after its options' (so they win), e.g. each
  // one's --tls_cert, --tls_key, --tls_ca.
  std::vector<std::string> kv_store_flags, prefill_flags, decode_flags;
  // "NAME=VALUE" entries set over the environment each service inherits,
  // e.g. prefill's CUDA_MPS_CLIENT_PRIORITY under serve's MPS daemon.
  std::vector<std::string> kv_store_env, prefill_env, decode_env;
  // What the health checks connect with (base/tls.h): a client certificate
  // when the services take TLS flags; null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  absl::Duration start_timeout = absl::Seconds(120);
};

class ServiceStack {
 public:
  enum Which { kKvStore = 0, kPrefill = 1, kDecode = 2 };

  // Starts the store, prefill and decode side by side on 127.0.0.1 (a port
  // of 0 is replaced by a free one first), and waits until all three answer
  // health checks. When a service exits before serving and a port was
  // picked here (another process may have taken it first), starts all three
  // again on other ports, three attempts in all.
  static absl::StatusOr<std::unique_ptr<ServiceStack>> Start(const ServiceStackOptions& options);
  // Stop().
  ~ServiceStack();

  std::string target(Which which) const;  // "127.0.0.1:PORT"
  int port(Which which) const { return ports_[which]; }
  int metrics_port(Which which) const { return metrics_ports_[which]; }
  // Decode's HTTP API port; 0 when it has none.
  int http_port() const { return http_port_; }
  // "http://127.0.0.1:PORT", the base of decode's HTTP API.
  std::string http_base_url() const;
  Subprocess* process(Which which) { return processes_[which].get(); }
  std::string log_path(Which which) const;

  // (Re)starts one service on its previous port and waits until it serves.
  absl::Status Restart(Which which);
  // SIGTERM to every service, decode first; returns the first non-zero exit.
  absl::Status Stop();

 private:
  explicit ServiceStack(const ServiceStackOptions& options) : options_(options) {}
  absl::Status Launch(Which which);        // starts the process
  absl::Status AwaitServing(Which which);  // its port file, then health SERVING

  ServiceStackOptions options_;
  std::array<int, 3> ports_ = {0, 0, 0};  // by Which
  int metrics_ports_[3] = {0, 0, 0};
  int http_port_ = 0;
  std::unique_ptr<Subprocess> processes_[3];
};

// The command line ServiceStack starts `which` with, given every service's
// gRPC port (by ServiceStack::Which): its binary in options.bin_dir, then the
// ToArgv of its options (every flag it takes) with: its --listen on
// DefaultListenHost() (127.0.0.1 unless $NANOSERVE_LISTEN_HOST); its metrics
// on 127.0.0.1, a free port (or off); its port file in options.work_dir
// (<binary>.ports); the model flags of options.model; the addresses of the
// services it calls (--kv_store, decode's --prefill); decode's --http_listen
// (host as --listen's); then its extra flags.
std::vector<std::string> ServiceArgv(const ServiceStackOptions& options, ServiceStack::Which which,
                                     const std::array<int, 3>& ports);

}  // namespace nanoserve

#endif  // NANOSERVE_CLIENT_SERVICE_CLIENT_H_
