// Client-side pieces of the services, shared by the `nanoserve` command, the
// service benchmark and the integration tests:
//  - StreamGenerate: one Generate call on the decode service, token by token;
//  - ServiceStack: the three service binaries started as child processes on
//    loopback, waited for until healthy, stopped with SIGTERM.
#ifndef NANOSERVE_CLIENT_SERVICE_CLIENT_H_
#define NANOSERVE_CLIENT_SERVICE_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nanoserve/v1/decode.grpc.pb.h"
#include "rpc/subprocess.h"

namespace nanoserve {

struct GenerateOutcome {
  std::vector<int> output_ids;
  std::string text;           // token texts + trailing_text
  v1::Finished finished;      // valid when the call succeeded
  double client_ttft_ms = 0;  // call start to the first token, as the client saw it
  double client_total_ms = 0;
};

// Runs Generate to the end. `on_token` (optional) sees each token as it
// arrives; returning false cancels the call (the result is then CANCELLED).
// The call's gRPC status as an absl::Status on failure.
absl::StatusOr<GenerateOutcome> StreamGenerate(
    v1::Decode::StubInterface& stub, const v1::GenerateRequest& request,
    absl::Duration timeout, const std::function<bool(const v1::Token&)>& on_token = nullptr);

struct ServiceStackOptions {
  // Directory of nanoserve-kv-store, nanoserve-prefill, nanoserve-decode.
  std::string bin_dir;
  // Where the services write their logs and port files.
  std::string work_dir;
  std::string model = "random:gpt2";
  uint64_t seed = 0;
  std::string device = "cpu";
  std::string dtype = "fp32";
  // Fixed ports, or 0 to let each service pick a free one.
  int kv_store_port = 0;
  int prefill_port = 0;
  int decode_port = 0;
  bool metrics = true;  // metrics pages on free ports
  int64_t page_size = 16;
  int64_t pool_mb = 512;
  int64_t lease_ttl_s = 60;
  int64_t max_batch = 16;
  int64_t max_context = 0;
  // Extra flags per service, e.g. {"--store_timeout_ms=500"}.
  std::vector<std::string> kv_store_flags, prefill_flags, decode_flags;
  absl::Duration start_timeout = absl::Seconds(120);
};

class ServiceStack {
 public:
  enum Which { kKvStore = 0, kPrefill = 1, kDecode = 2 };

  // Starts the store, prefill and decode side by side on 127.0.0.1 (a port
  // of 0 is replaced by a free one first), and waits until all three answer
  // health checks.
  static absl::StatusOr<std::unique_ptr<ServiceStack>> Start(const ServiceStackOptions& options);
  // Stop().
  ~ServiceStack();

  std::string target(Which which) const;  // "127.0.0.1:PORT"
  int port(Which which) const { return ports_[which]; }
  int metrics_port(Which which) const { return metrics_ports_[which]; }
  Subprocess* process(Which which) { return processes_[which].get(); }
  std::string log_path(Which which) const;

  // (Re)starts one service on its previous port and waits until it serves.
  absl::Status Restart(Which which);
  // SIGTERM to every service, decode first; returns the first non-zero exit.
  absl::Status Stop();

 private:
  explicit ServiceStack(const ServiceStackOptions& options) : options_(options) {}
  std::string PortFile(Which which) const;
  absl::Status Launch(Which which);        // starts the process
  absl::Status AwaitServing(Which which);  // its port file, then health SERVING
  std::vector<std::string> Argv(Which which) const;

  ServiceStackOptions options_;
  int ports_[3] = {0, 0, 0};
  int metrics_ports_[3] = {0, 0, 0};
  std::unique_ptr<Subprocess> processes_[3];
};

}  // namespace nanoserve

#endif  // NANOSERVE_CLIENT_SERVICE_CLIENT_H_
