#include "base/http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace nanoserve {
namespace {

// The system's largest listen backlog; listen() caps larger ones to it.
int SystemMaxBacklog() {
  std::ifstream in("/proc/sys/net/core/somaxconn");
  int n = 0;
  if (in >> n && n > 0) return n;
  return SOMAXCONN;
}

void RaiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// A listening socket on host:port, owned exclusively: SO_REUSEADDR (so a
// restart does not wait for TIME_WAIT) but never SO_REUSEPORT.
absl::StatusOr<int> Listen(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad HTTP address '", address, "': not host:port with a port in [0, 65535]"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [::1]:8000
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad HTTP address '", address, "': ", gai_strerror(rc)));
  }
  std::string why = "no address";
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, SystemMaxBacklog()) != 0) {
      why = std::strerror(errno);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", why));
  return fd;
}

int BoundPort(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof(a);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return -1;
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
}

MHD_Response* NewResponse(const HttpResponse& r) {
  MHD_Response* response = MHD_create_response_from_buffer(
      r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str());
  for (const auto& [name, value] : r.headers) {
    MHD_add_response_header(response, name.c_str(), value.c_str());
  }
  return response;
}

// HttpRequest::client_address of connection `c`.
std::string ClientAddressOf(MHD_Connection* c) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (info == nullptr || info->client_addr == nullptr) return "";
  char text[INET6_ADDRSTRLEN] = {};
  const sockaddr* addr = info->client_addr;
  if (addr->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(addr);
    if (inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text)) == nullptr) return "";
    return absl::StrCat("ipv4:", text);
  }
  if (addr->sa_family != AF_INET6) return "";
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(addr);
  if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {  // as gRPC: an IPv4 client is IPv4
    if (inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], text, sizeof(text)) == nullptr) return "";
    return absl::StrCat("ipv4:", text);
  }
  if (inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text)) == nullptr) return "";
  return absl::StrCat("ipv6:[", text, "]");
}

}  // namespace

std::string HttpRequest::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

class Exchange;

// Watches the sockets of suspended connections for the client closing them
// (MHD does not while a connection is suspended), and cuts off connections
// whose request has not arrived within the request timeout.
class Watcher {
 public:
  explicit Watcher(absl::Duration request_timeout);
  ~Watcher();
  void Start();
  void Stop();

  // Calls exchange->ClientGone() when `fd` is closed by the peer, until
  // Unwatch(id). Returns the watch's id.
  uint64_t Watch(int fd, const std::shared_ptr<Exchange>& exchange);
  void Unwatch(int fd, uint64_t id);

  // The connection on `fd` opened, waits for a request, has it whole, closed.
  void Opened(MHD_Connection* c, int fd);
  void AwaitRequest(MHD_Connection* c);
  void RequestArrived(MHD_Connection* c);
  void Closed(MHD_Connection* c);

 private:
  void Loop();
  void CutOffLateRequests();

  const absl::Duration request_timeout_;
  const int epoll_fd_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  uint64_t next_id_ = 1;                                           // guarded by mu_
  std::unordered_map<uint64_t, std::weak_ptr<Exchange>> watched_;  // guarded by mu_
  struct Pending {
    int fd;
    absl::Time deadline;  // InfiniteFuture once the request arrived
  };
  std::unordered_map<MHD_Connection*, Pending> connections_;  // guarded by mu_
};

// One request on a connection, from its headers until its response has been
// sent (or the connection closed). States: the handler has not answered
// (the connection is suspended while it waits), a whole response is ready,
// a stream is being written (suspended while no data is pending).
class Exchange final : public HttpResponder, public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(HttpServer::Impl* server, MHD_Connection* connection)
      : server_(server), connection_(connection) {}

  void Respond(HttpResponse response) override;
  void StartStream(HttpResponse head) override;
  void Write(std::string data) override;
  void End() override;
  void OnClientGone(std::function<void()> on_gone) override;

  // MHD's calls, on the event loop: the access handler once the request is
  // whole (or resumed), the content reader of a stream.
  MHD_Result Serve();
  ssize_t Read(char* buf, size_t max);
  // The client closed its socket while suspended (the watcher's thread).
  void ClientGone(uint64_t watch_id);
  // The request ended: sent in full (`ok`) or not; no more calls to MHD.
  void Completed(bool ok);
  // The server stops: resume if suspended, so that MHD can close it.
  void Abort();
  // The response is whole (a response, or a stream that has ended) but not
  // yet sent: the server's Stop lets it reach the client first.
  bool Flushing();

  HttpRequest request;
  bool too_large = false;
  bool dispatched = false;

 private:
  // REQUIRES: mu_ held, !suspended_. Suspends the connection and watches its
  // socket. Returns false (and suspends nothing) when the server stops.
  bool SuspendLocked();
  // REQUIRES: mu_ held. If suspended, unwatches and returns true: the caller
  // then calls MHD_resume_connection after unlocking.
  bool TakeSuspensionLocked();
  void Resume(bool resume);
  std::function<void()> TakeGoneLocked();

  HttpServer::Impl* const server_;
  MHD_Connection* connection_;  // null once completed
  std::mutex mu_;
  bool suspended_ = false;
  int fd_ = -1;
  uint64_t watch_id_ = 0;
  bool has_response_ = false;
  HttpResponse response_;
  bool streaming_ = false;  // StartStream was called
  bool queued_ = false;     // a response went to MHD
  std::string pending_;     // stream data not yet read by MHD
  bool ended_ = false;
  bool gone_ = false;  // the client left, or the server stops
  bool sent_ = false;
  std::function<void()> on_gone_;
};

class HttpServer::Impl {
 public:
  explicit Impl(HttpServerOptions options)
      : options_(std::move(options)), watcher_(options_.request_timeout) {}

  HttpResponse Error(int status, const std::string& message) const {
    if (options_.error_response) return options_.error_response(status, message);
    HttpResponse r;
    r.status = status;
    r.body = message + "\n";
    return r;
  }

  static MHD_Result Access(void* cls, MHD_Connection* c, const char* url, const char* method,
                           const char*, const char* upload, size_t* upload_size, void** con_cls);
  static void RequestDone(void* cls, MHD_Connection*, void** con_cls,
                          MHD_RequestTerminationCode code);
  static void ConnectionEvent(void* cls, MHD_Connection* c, void**,
                              MHD_ConnectionNotificationCode code);
  static ssize_t ReadStream(void* cls, uint64_t, char* buf, size_t max);
  static void FreeStream(void* cls);

  MHD_Result Begin(MHD_Connection* c, const char* url, const char* method, void** con_cls);
  void Dispatch(Exchange* exchange);

  const HttpServerOptions options_;
  std::map<std::pair<std::string, std::string>, HttpHandler> routes_;  // (method, path)
  Watcher watcher_;
  MHD_Daemon* daemon_ = nullptr;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::mutex mu_;
  std::unordered_map<Exchange*, std::weak_ptr<Exchange>> exchanges_;  // guarded by mu_
  std::condition_variable exchange_done_;                             // an exchange left exchanges_
};

// --- Watcher ---

Watcher::Watcher(absl::Duration request_timeout)
    : request_timeout_(request_timeout), epoll_fd_(epoll_create1(EPOLL_CLOEXEC)) {}

Watcher::~Watcher() {
  Stop();
  close(epoll_fd_);
}

void Watcher::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Watcher::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

uint64_t Watcher::Watch(int fd, const std::shared_ptr<Exchange>& exchange) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t id = next_id_++;
  watched_[id] = exchange;
  epoll_event e{};
  e.events = EPOLLRDHUP | EPOLLONESHOT;
  e.data.u64 = id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &e);
  return id;
}

void Watcher::Unwatch(int fd, uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  watched_.erase(id);
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

void Watcher::Opened(MHD_Connection* c, int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  connections_[c] = Pending{fd, absl::Now() + request_timeout_};
}

void Watcher::AwaitRequest(MHD_Connection* c) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = connections_.find(c);
  if (it != connections_.end()) it->second.deadline = absl::Now() + request_timeout_;
}

void Watcher::RequestArrived(MHD_Connection* c) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = connections_.find(c);
  if (it != connections_.end()) it->second.deadline = absl::InfiniteFuture();
}

void Watcher::Closed(MHD_Connection* c) {
  std::lock_guard<std::mutex> lock(mu_);
  connections_.erase(c);
}

void Watcher::Loop() {
  epoll_event events[64];
  while (!stop_.load()) {
    const int n = epoll_wait(epoll_fd_, events, 64, 100);
    for (int i = 0; i < n; ++i) {
      std::shared_ptr<Exchange> exchange;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = watched_.find(events[i].data.u64);
        if (it != watched_.end()) exchange = it->second.lock();
      }
      if (exchange != nullptr) exchange->ClientGone(events[i].data.u64);
    }
    CutOffLateRequests();
  }
}

void Watcher::CutOffLateRequests() {
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [connection, pending] : connections_) {
    // MHD closes the socket only after Closed(): the fd is still this one's.
    // Shut down, MHD sees the connection end and closes it.
    if (pending.deadline < now) {
      shutdown(pending.fd, SHUT_RDWR);
      pending.deadline = absl::InfiniteFuture();
    }
  }
}

// --- Exchange ---

bool Exchange::SuspendLocked() {
  if (server_->stopping_.load() || connection_ == nullptr) return false;
  suspended_ = true;
  MHD_suspend_connection(connection_);
  const MHD_ConnectionInfo* info =
      MHD_get_connection_info(connection_, MHD_CONNECTION_INFO_CONNECTION_FD);
  fd_ = info != nullptr ? info->connect_fd : -1;
  if (fd_ >= 0) watch_id_ = server_->watcher_.Watch(fd_, shared_from_this());
  return true;
}

bool Exchange::TakeSuspensionLocked() {
  if (!suspended_) return false;
  suspended_ = false;
  if (fd_ >= 0) server_->watcher_.Unwatch(fd_, watch_id_);
  return true;
}

void Exchange::Resume(bool resume) {
  // Only the one who took the suspension resumes; the connection cannot end
  // while suspended, so connection_ is valid here.
  if (resume) MHD_resume_connection(connection_);
}

std::function<void()> Exchange::TakeGoneLocked() {
  if (gone_) return nullptr;
  gone_ = true;
  return std::move(on_gone_);
}

void Exchange::Respond(HttpResponse response) {
  bool resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (gone_ || has_response_ || streaming_) return;
    has_response_ = true;
    response_ = std::move(response);
    resume = TakeSuspensionLocked();
  }
  Resume(resume);
}

void Exchange::StartStream(HttpResponse head) {
  bool resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (gone_ || has_response_ || streaming_) return;
    streaming_ = true;
    pending_ = std::move(head.body);
    head.body.clear();
    response_ = std::move(head);
    resume = TakeSuspensionLocked();
  }
  Resume(resume);
}

void Exchange::Write(std::string data) {
  bool resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (gone_ || !streaming_ || ended_) return;
    pending_ += data;
    resume = queued_ && TakeSuspensionLocked();
  }
  Resume(resume);
}

void Exchange::End() {
  bool resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (gone_ || !streaming_ || ended_) return;
    ended_ = true;
    resume = queued_ && TakeSuspensionLocked();
  }
  Resume(resume);
}

void Exchange::OnClientGone(std::function<void()> on_gone) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!gone_ || sent_) {
      if (!sent_) on_gone_ = std::move(on_gone);
      return;
    }
  }
  on_gone();
}

MHD_Result Exchange::Serve() {
  std::unique_lock<std::mutex> lock(mu_);
  if (queued_) return MHD_YES;
  if (gone_) return MHD_NO;  // closes the connection
  if (!has_response_ && !streaming_) {
    if (SuspendLocked()) return MHD_YES;
    lock.unlock();
    Respond(server_->Error(503, "shutting down"));
    lock.lock();
    if (!has_response_) return MHD_NO;
  }
  queued_ = true;
  MHD_Response* response;
  if (has_response_) {
    response = NewResponse(response_);
  } else {
    auto* self = new std::shared_ptr<Exchange>(shared_from_this());
    response =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, &HttpServer::Impl::ReadStream,
                                          self, &HttpServer::Impl::FreeStream);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, response_.content_type.c_str());
    for (const auto& [name, value] : response_.headers) {
      MHD_add_response_header(response, name.c_str(), value.c_str());
    }
  }
  const MHD_Result queued = MHD_queue_response(connection_, response_.status, response);
  MHD_destroy_response(response);
  return queued;
}

ssize_t Exchange::Read(char* buf, size_t max) {
  std::lock_guard<std::mutex> lock(mu_);
  if (gone_) return MHD_CONTENT_READER_END_WITH_ERROR;
  if (!pending_.empty()) {
    const size_t n = std::min(max, pending_.size());
    std::memcpy(buf, pending_.data(), n);
    pending_.erase(0, n);
    return static_cast<ssize_t>(n);
  }
  if (ended_) return MHD_CONTENT_READER_END_OF_STREAM;
  // Nothing yet: suspended until Write or End (0 is legal with a suspension).
  return SuspendLocked() ? 0 : MHD_CONTENT_READER_END_WITH_ERROR;
}

void Exchange::ClientGone(uint64_t watch_id) {
  std::function<void()> on_gone;
  bool resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!suspended_ || watch_id != watch_id_) return;  // MHD is on it
    on_gone = TakeGoneLocked();
    resume = TakeSuspensionLocked();
  }
  if (on_gone) on_gone();
  Resume(resume);  // MHD then closes the connection
}

void Exchange::Abort() {
  std::function<void()> on_gone;
  bool resume;
  {
    std::lock_guard<std::mutex> lock(mu_);
    on_gone = sent_ ? nullptr : TakeGoneLocked();
    resume = TakeSuspensionLocked();
  }
  if (on_gone) on_gone();
  Resume(resume);
}

bool Exchange::Flushing() {
  std::lock_guard<std::mutex> lock(mu_);
  return !gone_ && (has_response_ || ended_);
}

void Exchange::Completed(bool ok) {
  std::function<void()> on_gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    sent_ = ok && queued_;
    if (!sent_) on_gone = TakeGoneLocked();
    gone_ = true;
    connection_ = nullptr;
  }
  if (on_gone) on_gone();
}

// --- HttpServer::Impl: MHD's callbacks ---

MHD_Result HttpServer::Impl::Access(void* cls, MHD_Connection* c, const char* url,
                                    const char* method, const char*, const char* upload,
                                    size_t* upload_size, void** con_cls) {
  auto* self = static_cast<Impl*>(cls);
  if (*con_cls == nullptr) return self->Begin(c, url, method, con_cls);
  Exchange* exchange = static_cast<std::shared_ptr<Exchange>*>(*con_cls)->get();
  if (*upload_size > 0) {
    if (!exchange->too_large) {
      if (exchange->request.body.size() + *upload_size >
          static_cast<size_t>(self->options_.max_body_bytes)) {
        exchange->too_large = true;
        exchange->request.body.clear();
      } else {
        exchange->request.body.append(upload, *upload_size);
      }
    }
    *upload_size = 0;
    return MHD_YES;
  }
  if (!exchange->dispatched) {
    exchange->dispatched = true;
    self->watcher_.RequestArrived(c);
    self->Dispatch(exchange);
  }
  return exchange->Serve();
}

MHD_Result HttpServer::Impl::Begin(MHD_Connection* c, const char* url, const char* method,
                                   void** con_cls) {
  auto exchange = std::make_shared<Exchange>(this, c);
  {
    std::lock_guard<std::mutex> lock(mu_);
    exchanges_[exchange.get()] = exchange;
  }
  exchange->request.method = method;
  exchange->request.path = url;
  exchange->request.client_address = ClientAddressOf(c);
  MHD_get_connection_values(
      c, MHD_HEADER_KIND,
      [](void* cls, MHD_ValueKind, const char* key, const char* value) {
        static_cast<HttpRequest*>(cls)->headers[absl::AsciiStrToLower(key)] = value;
        return MHD_YES;
      },
      &exchange->request);
  *con_cls = new std::shared_ptr<Exchange>(exchange);
  // Answered before the body is read; the connection then closes.
  auto refuse = [&](int status, const std::string& message) {
    exchange->dispatched = true;
    HttpResponse r = Error(status, message);
    r.headers.emplace_back(MHD_HTTP_HEADER_CONNECTION, "close");
    exchange->Respond(std::move(r));
    return exchange->Serve();
  };
  if (connections_.load() > options_.max_connections) {
    return refuse(503, absl::StrCat("too many connections (", options_.max_connections,
                                    "); try again later"));
  }
  int64_t length = 0;
  if (absl::SimpleAtoi(exchange->request.Header("content-length"), &length) &&
      length > options_.max_body_bytes) {
    return refuse(413, "the request body is too large");
  }
  return MHD_YES;
}

void HttpServer::Impl::Dispatch(Exchange* exchange) {
  const HttpRequest& request = exchange->request;
  std::shared_ptr<Exchange> self = exchange->shared_from_this();
  if (exchange->too_large) return self->Respond(Error(413, "the request body is too large"));
  auto it = routes_.find({request.method, request.path});
  if (it != routes_.end()) return it->second(request, self);
  const bool path_known = std::any_of(routes_.begin(), routes_.end(), [&](const auto& route) {
    return route.first.second == request.path;
  });
  self->Respond(
      path_known
          ? Error(405, absl::StrCat("method ", request.method, " not allowed on ", request.path))
          : Error(404, absl::StrCat("no such endpoint: ", request.method, " ", request.path)));
}

void HttpServer::Impl::RequestDone(void* cls, MHD_Connection* c, void** con_cls,
                                   MHD_RequestTerminationCode code) {
  auto* self = static_cast<Impl*>(cls);
  auto* held = static_cast<std::shared_ptr<Exchange>*>(*con_cls);
  if (held == nullptr) return;
  (*held)->Completed(code == MHD_REQUEST_TERMINATED_COMPLETED_OK);
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    self->exchanges_.erase(held->get());
  }
  self->exchange_done_.notify_all();
  delete held;
  *con_cls = nullptr;
  self->watcher_.AwaitRequest(c);  // keep-alive: the next request's clock
}

void HttpServer::Impl::ConnectionEvent(void* cls, MHD_Connection* c, void**,
                                       MHD_ConnectionNotificationCode code) {
  auto* self = static_cast<Impl*>(cls);
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    self->connections_.fetch_add(1);
    const MHD_ConnectionInfo* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info != nullptr) self->watcher_.Opened(c, info->connect_fd);
  } else {
    self->watcher_.Closed(c);
    self->connections_.fetch_sub(1);
  }
}

ssize_t HttpServer::Impl::ReadStream(void* cls, uint64_t, char* buf, size_t max) {
  return (*static_cast<std::shared_ptr<Exchange>*>(cls))->Read(buf, max);
}

void HttpServer::Impl::FreeStream(void* cls) {
  delete static_cast<std::shared_ptr<Exchange>*>(cls);
}

// --- HttpServer ---

HttpServer::HttpServer(HttpServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(const std::string& method, const std::string& path, HttpHandler handler) {
  impl_->routes_[{method, path}] = std::move(handler);
}

void HttpServer::Handle(const std::string& method, const std::string& path,
                        std::function<HttpResponse(const HttpRequest&)> handler) {
  Handle(method, path,
         [handler = std::move(handler)](const HttpRequest& request,
                                        std::shared_ptr<HttpResponder> responder) {
           responder->Respond(handler(request));
         });
}

absl::StatusOr<int> HttpServer::Start(const std::string& address) {
  absl::StatusOr<int> fd = Listen(address);
  if (!fd.ok()) return fd.status();
  RaiseOpenFileLimit();
  Impl& s = *impl_;
  s.listen_fd_ = *fd;
  const unsigned idle_s =
      static_cast<unsigned>(std::max<int64_t>(1, absl::ToInt64Seconds(s.options_.idle_timeout)));
  // MHD closes connections past its own limit at once; ours (503) is below.
  const unsigned hard_limit = static_cast<unsigned>(std::max(s.options_.max_connections, 1)) +
                              static_cast<unsigned>(std::max(s.options_.max_connections / 4, 64));
  s.daemon_ = MHD_start_daemon(
      MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME, 0, nullptr, nullptr, &Impl::Access,
      &s, MHD_OPTION_LISTEN_SOCKET, static_cast<MHD_socket>(s.listen_fd_),
      MHD_OPTION_THREAD_POOL_SIZE, static_cast<unsigned>(std::max(s.options_.threads, 1)),
      MHD_OPTION_CONNECTION_LIMIT, hard_limit, MHD_OPTION_CONNECTION_TIMEOUT, idle_s,
      MHD_OPTION_NOTIFY_COMPLETED, &Impl::RequestDone, &s, MHD_OPTION_NOTIFY_CONNECTION,
      &Impl::ConnectionEvent, &s, MHD_OPTION_END);
  if (s.daemon_ == nullptr) {
    close(s.listen_fd_);
    s.listen_fd_ = -1;
    return absl::UnavailableError(absl::StrCat("cannot start the HTTP server on ", address));
  }
  s.watcher_.Start();
  return BoundPort(s.listen_fd_);
}

void HttpServer::Stop() {
  Impl& s = *impl_;
  if (s.daemon_ == nullptr) return;
  s.stopping_.store(true);
  MHD_quiesce_daemon(s.daemon_);
  // Responses already whole (an answer, a stream that has ended: the last
  // event of a drained stream is its error) reach their clients first, for
  // at most flush_timeout; MHD_stop_daemon would drop what is unsent.
  const absl::Time flush_deadline = absl::Now() + s.options_.flush_timeout;
  for (;;) {
    std::vector<std::shared_ptr<Exchange>> flushing;
    {
      std::lock_guard<std::mutex> lock(s.mu_);
      for (auto& [raw, weak] : s.exchanges_) {
        if (auto e = weak.lock(); e != nullptr && e->Flushing()) flushing.push_back(std::move(e));
      }
    }
    if (flushing.empty() || absl::Now() >= flush_deadline) break;
    flushing.clear();  // outside the lock: the last reference may go here
    std::unique_lock<std::mutex> lock(s.mu_);
    s.exchange_done_.wait_for(lock, std::chrono::milliseconds(10));
  }
  std::vector<std::shared_ptr<Exchange>> open;
  {
    std::lock_guard<std::mutex> lock(s.mu_);
    for (auto& [raw, weak] : s.exchanges_) {
      if (auto e = weak.lock()) open.push_back(std::move(e));
    }
  }
  for (const auto& e : open) e->Abort();
  open.clear();
  MHD_stop_daemon(s.daemon_);
  s.daemon_ = nullptr;
  s.watcher_.Stop();
  close(s.listen_fd_);
  s.listen_fd_ = -1;
}

int HttpServer::connections() const { return impl_->connections_.load(); }

}  // namespace nanoserve
