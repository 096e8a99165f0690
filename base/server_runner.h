// Runs a gRPC server the way every nanoserve service does: listening on a
// configured address (loopback by default), with bounded message sizes,
// gRPC health checking (grpc.health.v1), server reflection
// (grpc.reflection.v1alpha), an optional Prometheus metrics page over HTTP,
// optional side servers (decode's OpenAI-compatible HTTP API), and a
// graceful shutdown on SIGTERM or SIGINT: health (gRPC, /healthz) turns
// NOT_SERVING at once, new calls are refused, calls in flight get
// `shutdown_grace` to finish; shortly before it runs out `end_unfinished`
// ends those left with a clear status (decode: UNAVAILABLE, retry elsewhere),
// and whatever still runs at the deadline is cancelled. Connections are
// closed after `max_connection_age` (GOAWAY; calls on them get
// `max_connection_age_grace`), so clients re-resolve the name and new
// replicas behind it get calls.
#ifndef NANOSERVE_BASE_SERVER_RUNNER_H_
#define NANOSERVE_BASE_SERVER_RUNNER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/metrics.h"

namespace nanoserve {

// What a service serves beside its gRPC port for as long as it runs, e.g.
// decode's OpenAI-compatible HTTP API (decode_service/openai_server.h).
// ServeUntilSignal starts it after the gRPC server and stops it with it.
class SideServer {
 public:
  virtual ~SideServer() = default;
  // Binds and starts serving; returns the port bound. UNAVAILABLE if its
  // address cannot be bound.
  virtual absl::StatusOr<int> Start() = 0;
  // A shutdown began: refuse new calls from now on; calls in flight go on.
  virtual void Drain() = 0;
  // Lets calls in flight run until `deadline`, cancels the rest, and stops
  // serving; returns when nothing runs. REQUIRES: Start succeeded.
  virtual void Stop(absl::Time deadline) = 0;
};

struct ServerOptions {
  // Service name for logs, e.g. "nanoserve-kv-store".
  std::string name;
  // gRPC address, host:port. Port 0 picks a free port (see port_file).
  std::string listen = "127.0.0.1:0";
  // host:port of the HTTP metrics page (GET /metrics), which also serves
  // GET /healthz (readiness: 503 from the shutdown signal on) and GET /livez
  // (liveness: `liveness`'s answer, 200 throughout a drain); empty: none.
  std::string metrics_listen;
  // What GET /livez says: OK (200), or why the process should be restarted
  // (503), e.g. decode's scheduler loop stuck. Empty: 200 while it answers.
  std::function<absl::Status()> liveness;
  // Largest message received or sent, in bytes.
  int64_t max_message_bytes = 8 << 20;
  // If set, written once serving: the gRPC port, then the metrics port (0
  // when none), then each side server's port, one per line. Tests and
  // `nanoserve serve` read it.
  std::string port_file;
  // How long calls in flight may take to finish after a shutdown signal.
  absl::Duration shutdown_grace = absl::Seconds(5);
  // Transport security of the gRPC port (rpc/tls.h); null: plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Served beside the gRPC port, in this order (not owned).
  std::vector<SideServer*> side_servers;
  // Called once, EndUnfinishedMargin(shutdown_grace) before the grace runs
  // out, if calls are still in flight then: ends them with a clear status
  // (not the CANCELLED of the deadline), e.g. decode's streams with
  // UNAVAILABLE and a retry hint. Empty: the deadline cancels them.
  std::function<void()> end_unfinished;
  // A connection older than this gets a GOAWAY (gRPC adds +-10% jitter):
  // its client reconnects, re-resolving the target's name, so pods added
  // behind a headless Service get calls within about this long.
  absl::Duration max_connection_age = absl::Seconds(30);
  // How long calls on such a connection may still run before it is closed;
  // a decode stream longer than this ends (UNAVAILABLE) when it is.
  absl::Duration max_connection_age_grace = absl::Minutes(10);

  // INVALID_ARGUMENT naming the first bad field: an address that is not
  // host:port with a port in [0, 65535], a message bound outside
  // [1024, 2^31 - 1].
  absl::Status Validate() const;
};

// The host that services listen on unless told otherwise: $NANOSERVE_LISTEN_HOST
// where it is set and not empty (the images set 0.0.0.0), else 127.0.0.1. An
// IPv6 host comes back in brackets, ready for host:port.
std::string DefaultListenHost();

// `address` (host:port) with its host replaced by DefaultListenHost(); an
// address without a colon comes back as it is.
std::string WithDefaultListenHost(const std::string& address);

// How long before the end of a shutdown grace of `grace` ServeUntilSignal
// calls ServerOptions::end_unfinished: a quarter of it, at most 2 s (the
// time the ended calls get to say so).
absl::Duration EndUnfinishedMargin(absl::Duration grace);

// The channel arguments of ServeUntilSignal's server (message bounds, flow
// control window, connection age), for tests.
void ConfigureServerBuilder(const ServerOptions& options, grpc::ServerBuilder& builder);

// OK if `address` is host:port with a port in [0, 65535].
absl::Status ValidateAddress(absl::string_view address);

// True if `address` (host:port) listens on loopback only: its host is
// "localhost", an IPv4 address in 127.0.0.0/8 or "::1" (bracketed or not).
// Any other host (0.0.0.0, "::", a name, an interface's address) reaches
// beyond this machine, or may: false.
bool IsLoopbackAddress(absl::string_view address);

// Blocks SIGTERM and SIGINT in the calling thread so that they are received
// only by ServeUntilSignal's sigwait. Call first thing in main, before any
// thread starts (threads inherit the mask).
void BlockTerminationSignals();

// Waits until SIGTERM or SIGINT arrives and returns its number.
// REQUIRES: BlockTerminationSignals() was called (else the signal's default
// action, ending the process, may run first).
int WaitForTerminationSignal();

// Starts the server with `services` (not owned; they must outlive the call),
// serves until SIGTERM or SIGINT, then shuts down gracefully. `before_stop`
// (optional) runs after the server stopped taking calls and before it waits
// for them, e.g. to cancel long streams. UNAVAILABLE if the address cannot
// be bound; options.Validate()'s errors.
absl::Status ServeUntilSignal(const ServerOptions& options,
                              const std::vector<grpc::Service*>& services,
                              const MetricsRegistry* metrics,
                              const std::function<void()>& before_stop = nullptr);

// A channel to `target` (host:port) with the given message size bound and
// transport security (rpc/tls.h); null `credentials`: plaintext (the
// services listen on loopback by default). Calls are spread round robin over
// every address `target` resolves to (a headless Service's pods); the name
// is resolved again when a connection fails or is closed (a server's
// max_connection_age closes it), not on a timer, at most once a second.
// A connection attempt gives up after 1 s and the next comes at most 2 s
// later, so a peer back on the same or a new address is used within 2 s.
std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& target, int64_t max_message_bytes,
    std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

// Polls grpc.health.v1 Check on `target` until it answers SERVING;
// DEADLINE_EXCEEDED if it does not within `timeout`. `credentials` as for
// MakeChannel.
absl::Status WaitForServing(const std::string& target, absl::Duration timeout,
                            std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_SERVER_RUNNER_H_
