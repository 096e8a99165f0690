#include "client/service_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "base/server_runner.h"
#include "base/status.h"

namespace nanoserve {

v1::GenerateRequest GreedyRequest(const std::vector<int>& prompt_ids, int64_t max_new_tokens) {
  v1::GenerateRequest request;
  request.mutable_prompt_ids()->Add(prompt_ids.begin(), prompt_ids.end());
  request.set_max_new_tokens(max_new_tokens);
  request.set_ignore_eos(true);
  return request;
}

absl::StatusOr<GenerateOutcome> StreamGenerate(
    v1::Decode::StubInterface& stub, const v1::GenerateRequest& request, absl::Duration timeout,
    const std::function<bool(const v1::Token&)>& on_token) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  const absl::Time start = absl::Now();
  std::unique_ptr<grpc::ClientReaderInterface<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  GenerateOutcome outcome;
  v1::GenerateResponse message;
  bool stopped = false;
  while (reader->Read(&message)) {
    if (message.has_token()) {
      if (outcome.output_ids.empty()) {
        outcome.client_ttft_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
      }
      outcome.output_ids.push_back(message.token().id());
      outcome.text += message.token().text();
      if (!stopped && on_token && !on_token(message.token())) {
        stopped = true;
        context.TryCancel();
      }
    } else if (message.has_finished()) {
      outcome.finished = message.finished();
      outcome.text += message.finished().trailing_text();
    }
  }
  grpc::Status status = reader->Finish();
  outcome.client_total_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  if (!status.ok()) return FromGrpcStatus(status);
  return outcome;
}

namespace {

const char* const kBinary[] = {"nanoserve-kv-store", "nanoserve-prefill", "nanoserve-decode"};

// A port free on 127.0.0.1 right now (the kernel's pick for port 0).
absl::StatusOr<int> PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  close(fd);
  if (!ok) return absl::InternalError("cannot pick a free port");
  return ntohs(addr.sin_port);
}

// Where service `which` of a stack writes its ports (ServerOptions::port_file).
std::string PortFile(const std::string& work_dir, ServiceStack::Which which) {
  return absl::StrCat(work_dir, "/", kBinary[which], ".ports");
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServiceStack>> ServiceStack::Start(
    const ServiceStackOptions& options) {
  // The services write their ports and logs there.
  std::error_code made;
  if (!options.work_dir.empty()) std::filesystem::create_directories(options.work_dir, made);
  if (made) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot make the work directory ", options.work_dir, ": ", made.message()));
  }
  // Every address is known up front, so the three start side by side. A
  // port picked free may be taken by another process before the service
  // binds it (the kernel hands the same range to outgoing connections): a
  // service that then exits before serving makes the stack start again on
  // other ports, a few times, when any port was picked here.
  const int wanted[3] = {options.kv_store_port, options.prefill_port, options.decode_port};
  const bool picked = wanted[0] == 0 || wanted[1] == 0 || wanted[2] == 0;
  constexpr int kAttempts = 3;
  absl::Status failed;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    auto stack = std::unique_ptr<ServiceStack>(new ServiceStack(options));
    for (Which which : {kKvStore, kPrefill, kDecode}) {
      stack->ports_[which] = wanted[which];
      if (wanted[which] == 0) {
        auto port = PickFreePort();
        if (!port.ok()) return port.status();
        stack->ports_[which] = *port;
      }
    }
    for (Which which : {kKvStore, kPrefill, kDecode}) {
      if (failed = stack->Launch(which); !failed.ok()) return failed;
    }
    for (Which which : {kKvStore, kPrefill, kDecode}) {
      if (failed = stack->AwaitServing(which); !failed.ok()) break;
    }
    if (failed.ok()) return stack;
    if (!picked || failed.code() != absl::StatusCode::kUnavailable || attempt == kAttempts) {
      return failed;
    }
    std::fprintf(stderr, "service stack: %s; starting again on other ports (attempt %d of %d)\n",
                 std::string(failed.message()).c_str(), attempt + 1, kAttempts);
    stack->Stop().IgnoreError();
  }
  return failed;
}

ServiceStack::~ServiceStack() { Stop().IgnoreError(); }

std::string ServiceStack::target(Which which) const {
  return absl::StrCat("127.0.0.1:", ports_[which]);
}

std::string ServiceStack::http_base_url() const {
  return absl::StrCat("http://127.0.0.1:", http_port_);
}

std::string ServiceStack::log_path(Which which) const {
  return absl::StrCat(options_.work_dir, "/", kBinary[which], ".log");
}

ServiceStackOptions::ServiceStackOptions() {
  model.spec = "random:gpt2";
  kv_store.pool_mb = 512;
}

std::vector<std::string> ServiceArgv(const ServiceStackOptions& o, ServiceStack::Which which,
                                     const std::array<int, 3>& ports) {
  auto target = [&](ServiceStack::Which peer) { return absl::StrCat("127.0.0.1:", ports[peer]); };
  auto set_service = [&](ServiceOptions* service) {
    // Its peers reach it on loopback; $NANOSERVE_LISTEN_HOST (the image's
    // 0.0.0.0) opens it to others too, as `nanoserve serve` in a container.
    service->listen = absl::StrCat(DefaultListenHost(), ":", ports[which]);
    service->metrics_listen = o.metrics ? "127.0.0.1:0" : "";
    service->port_file = PortFile(o.work_dir, which);
    service->model = o.model;
  };
  std::vector<std::string> argv = {absl::StrCat(o.bin_dir, "/", kBinary[which])};
  const std::vector<std::string>* extra = nullptr;
  if (which == ServiceStack::kKvStore) {
    KvStoreOptions kv_store = o.kv_store;
    set_service(&kv_store.service);
    AppendArgv(kv_store.ToArgv(), &argv);
    extra = &o.kv_store_flags;
  } else if (which == ServiceStack::kPrefill) {
    PrefillOptions prefill = o.prefill;
    set_service(&prefill.service);
    prefill.store.kv_store = target(ServiceStack::kKvStore);
    AppendArgv(prefill.ToArgv(), &argv);
    extra = &o.prefill_flags;
  } else {
    DecodeOptions decode = o.decode;
    set_service(&decode.service);
    decode.store.kv_store = target(ServiceStack::kKvStore);
    decode.prefill = target(ServiceStack::kPrefill);
    decode.http_listen = o.http_port < 0 ? "" : absl::StrCat(DefaultListenHost(), ":", o.http_port);
    AppendArgv(decode.ToArgv(), &argv);
    extra = &o.decode_flags;
  }
  AppendArgv(*extra, &argv);
  return argv;
}

absl::Status ServiceStack::Launch(Which which) {
  unlink(PortFile(options_.work_dir, which).c_str());
  const std::vector<std::string>& env = which == kKvStore   ? options_.kv_store_env
                                        : which == kPrefill ? options_.prefill_env
                                                            : options_.decode_env;
  auto process = Subprocess::Start(ServiceArgv(options_, which, ports_), log_path(which), env);
  if (!process.ok()) return process.status();
  processes_[which] = *std::move(process);
  return absl::OkStatus();
}

absl::Status ServiceStack::AwaitServing(Which which) {
  const std::string port_file = PortFile(options_.work_dir, which);
  auto ports = ReadPortFile(port_file, processes_[which].get(), options_.start_timeout);
  if (!ports.ok()) {
    return absl::UnavailableError(absl::StrCat(
        kBinary[which], " did not start (", ports.status().message(), "); see ", log_path(which)));
  }
  ports_[which] = ports->grpc;
  metrics_ports_[which] = ports->metrics;
  if (which == kDecode) http_port_ = ports->http;
  return WaitForServing(target(which), options_.start_timeout, options_.credentials);
}

absl::Status ServiceStack::Restart(Which which) {
  if (processes_[which] != nullptr && processes_[which]->running()) {
    processes_[which]->Stop().IgnoreError();
  }
  if (absl::Status s = Launch(which); !s.ok()) return s;
  return AwaitServing(which);
}

absl::Status ServiceStack::Stop() {
  absl::Status first;
  for (Which which : {kDecode, kPrefill, kKvStore}) {
    if (processes_[which] == nullptr) continue;
    if (processes_[which]->running()) {
      auto code = processes_[which]->Stop();
      if (first.ok() && (!code.ok() || *code != 0)) {
        first = absl::InternalError(
            absl::StrCat(kBinary[which], " exited with ", code.ok() ? *code : -1));
      }
    }
    processes_[which].reset();
  }
  return first;
}

}  // namespace nanoserve
