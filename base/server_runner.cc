#include "base/server_runner.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "base/http_server.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace nanoserve {
namespace {

// The HTTP/2 flow-control window a receiver offers each stream: a few page
// chunks, so a bulk Fetch or Put is not paced by round trips.
constexpr int kStreamWindowBytes = 8 << 20;

// The metrics page: GET /metrics; GET /healthz, which says what the gRPC
// health service says (200 "ok" while serving, 503 once stopping: readiness);
// GET /livez, `liveness`'s answer (liveness: a drain does not fail it).
// Event driven (base/http_server.h): slow or idle clients hold a socket each
// and starve nobody.
class MetricsHttpServer {
 public:
  MetricsHttpServer(const MetricsRegistry* metrics, const std::atomic<bool>* serving,
                    std::function<absl::Status()> liveness)
      : http_(HttpServerOptions()) {
    http_.Handle("GET", "/livez", [liveness](const HttpRequest&) {
      const absl::Status live = liveness ? liveness() : absl::OkStatus();
      HttpResponse r;
      r.status = live.ok() ? 200 : 503;
      r.body = live.ok() ? "ok\n" : std::string(live.message()) + "\n";
      return r;
    });
    http_.Handle("GET", "/metrics", [metrics](const HttpRequest&) {
      HttpResponse r;
      r.content_type = "text/plain; version=0.0.4";
      r.body = metrics->Render();
      return r;
    });
    http_.Handle("GET", "/healthz", [serving](const HttpRequest&) {
      const bool up = serving->load();
      HttpResponse r;
      r.status = up ? 200 : 503;
      r.body = up ? "ok\n" : "not serving\n";
      return r;
    });
  }

  // Binds host:port (port 0: any free one); returns the port.
  absl::StatusOr<int> Start(const std::string& address) { return http_.Start(address); }
  void Stop() { http_.Stop(); }

 private:
  HttpServer http_;
};

// SIGTERM and SIGINT: the signals that stop a service.
sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockTerminationSignals() {
  const sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A peer that closes its socket must not end the process: a write to a
  // closed connection by a library that does not pass MSG_NOSIGNAL would
  // raise SIGPIPE; ignored, the write fails with EPIPE instead.
  signal(SIGPIPE, SIG_IGN);
}

int WaitForTerminationSignal() {
  const sigset_t set = TerminationSignals();
  int signal_number = 0;
  sigwait(&set, &signal_number);
  return signal_number;
}

absl::Status ValidateAddress(absl::string_view address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address, "' is not host:port with a port in [0, 65535]"));
  }
  return absl::OkStatus();
}

bool IsLoopbackAddress(absl::string_view address) {
  const size_t colon = address.rfind(':');
  absl::string_view host = colon == absl::string_view::npos ? address : address.substr(0, colon);
  if (absl::ConsumePrefix(&host, "[")) {
    if (!absl::ConsumeSuffix(&host, "]")) return false;
  }
  if (host == "localhost" || host == "::1") return true;
  std::vector<absl::string_view> octets = absl::StrSplit(host, '.');
  if (octets.size() != 4 || octets[0] != "127") return false;
  for (absl::string_view octet : octets) {
    int value = -1;
    if (!absl::SimpleAtoi(octet, &value) || value < 0 || value > 255) return false;
  }
  return true;
}

absl::Status ServerOptions::Validate() const {
  if (absl::Status s = ValidateAddress(listen); !s.ok()) return s;
  if (!metrics_listen.empty()) {
    if (absl::Status s = ValidateAddress(metrics_listen); !s.ok()) return s;
  }
  if (max_message_bytes < 1024 || max_message_bytes > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes ", max_message_bytes, " is outside [1024, 2^31 - 1]"));
  }
  return absl::OkStatus();
}

absl::Duration EndUnfinishedMargin(absl::Duration grace) {
  return std::min(grace / 4, absl::Seconds(2));
}

namespace {

int ClampedMs(absl::Duration d) {
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(d), std::numeric_limits<int>::max()));
}

}  // namespace

void ConfigureServerBuilder(const ServerOptions& options, grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  // Page streams: let a sender have several chunks in flight (HTTP/2 window).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamWindowBytes);
  // The port is ours alone: with SO_REUSEPORT (gRPC's default on Linux) a
  // second server on the same port would start and take a share of the calls.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Old connections go (GOAWAY), so clients re-resolve and spread to new pods.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, ClampedMs(options.max_connection_age));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                             ClampedMs(options.max_connection_age_grace));
}

absl::Status ServeUntilSignal(const ServerOptions& options,
                              const std::vector<grpc::Service*>& services,
                              const MetricsRegistry* metrics,
                              const std::function<void()>& before_stop) {
  if (absl::Status bad = options.Validate(); !bad.ok()) return bad;
  grpc::EnableDefaultHealthCheckService(true);
  // Server reflection (grpc.reflection.v1alpha): generic tools (grpcurl,
  // grpc_cli, Postman) list and call the services without the protos.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(
      options.listen,
      options.credentials != nullptr ? options.credentials : grpc::InsecureServerCredentials(),
      &grpc_port);
  ConfigureServerBuilder(options, builder);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return absl::UnavailableError(absl::StrCat(options.name, ": cannot listen on ", options.listen,
                                               " (is the port in use by another process?)"));
  }
  std::atomic<bool> serving{true};  // what the gRPC health service says, for /healthz
  server->GetHealthCheckService()->SetServingStatus(true);

  MetricsHttpServer http(metrics, &serving, options.liveness);
  int metrics_port = 0;
  if (!options.metrics_listen.empty() && metrics != nullptr) {
    auto port = http.Start(options.metrics_listen);
    if (!port.ok()) {
      server->Shutdown();
      return port.status();
    }
    metrics_port = *port;
  }
  std::vector<int> side_ports;
  for (SideServer* side : options.side_servers) {
    absl::StatusOr<int> port = side->Start();
    if (!port.ok()) {
      for (size_t i = 0; i < side_ports.size(); ++i) options.side_servers[i]->Stop(absl::Now());
      server->Shutdown();
      return port.status();
    }
    side_ports.push_back(*port);
  }
  if (!options.port_file.empty()) {
    std::ofstream out(options.port_file);
    out << grpc_port << "\n" << metrics_port << "\n";
    for (int port : side_ports) out << port << "\n";
  }
  std::fprintf(stderr, "%s: serving on port %d (metrics port %d", options.name.c_str(), grpc_port,
               metrics_port);
  for (int port : side_ports) std::fprintf(stderr, ", HTTP port %d", port);
  std::fprintf(stderr, ")\n");

  const int signal_number = WaitForTerminationSignal();
  std::fprintf(stderr, "%s: signal %d, shutting down\n", options.name.c_str(), signal_number);

  server->GetHealthCheckService()->SetServingStatus(false);
  serving.store(false);
  for (SideServer* side : options.side_servers) side->Drain();
  if (before_stop) before_stop();
  const absl::Time stopping = absl::Now();
  const absl::Time deadline = stopping + options.shutdown_grace;
  // Shortly before the deadline, calls still running are ended with a clear
  // status rather than cut by the deadline's CANCELLED.
  absl::Notification all_done;
  std::thread ender;
  if (options.end_unfinished) {
    ender = std::thread([&] {
      if (!all_done.WaitForNotificationWithDeadline(deadline -
                                                    EndUnfinishedMargin(options.shutdown_grace))) {
        std::fprintf(stderr, "%s: grace of %s runs out: ending the calls still in flight\n",
                     options.name.c_str(), absl::FormatDuration(options.shutdown_grace).c_str());
        options.end_unfinished();
      }
    });
  }
  server->Shutdown(absl::ToChronoTime(deadline));
  server->Wait();
  for (SideServer* side : options.side_servers) side->Stop(deadline);
  all_done.Notify();
  if (ender.joinable()) ender.join();
  http.Stop();
  std::fprintf(stderr, "%s: stopped in %.0f ms\n", options.name.c_str(),
               absl::ToDoubleMilliseconds(absl::Now() - stopping));
  return absl::OkStatus();
}

std::string DefaultListenHost() {
  const char* env = std::getenv("NANOSERVE_LISTEN_HOST");
  if (env == nullptr || *env == '\0') return "127.0.0.1";
  std::string host = env;
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return host;
}

std::string WithDefaultListenHost(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return address;
  return DefaultListenHost() + address.substr(colon);
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, int64_t max_message_bytes,
                                           std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamWindowBytes);
  // A peer back after a restart, on the same address or a new one, is used
  // within two seconds: reconnection backs off from 200 ms to at most 1.6 s
  // (gRPC adds up to 20% jitter: under 2 s); an attempt to an address that
  // does not answer (a pod gone, its IP dropping packets) gives up after
  // 1 s, not gRPC's 20 s; and the failure re-resolves the name at once (DNS:
  // at most once a second, not gRPC's 30 s).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1600);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 1000);
  // Calls go round robin over every address the target's name resolves to:
  // behind a headless Kubernetes Service, one per pod (gRPC's default,
  // pick_first, would send all of them to one pod). One address: as before.
  args.SetLoadBalancingPolicyName("round_robin");
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  return grpc::CreateCustomChannel(target, credentials, args);
}

absl::Status WaitForServing(const std::string& target, absl::Duration timeout,
                            std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto stub =
      grpc::health::v1::Health::NewStub(MakeChannel(target, 1 << 20, std::move(credentials)));
  const absl::Time end = absl::Now() + timeout;
  std::string last = "no answer";
  while (absl::Now() < end) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = stub->Check(&context, request, &response);
    if (status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::OkStatus();
    }
    last = status.ok() ? "not serving" : status.error_message();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(target, " not serving after ", absl::FormatDuration(timeout), ": ", last));
}

}  // namespace nanoserve
