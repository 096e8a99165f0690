// An event-driven HTTP/1.1 server (GNU libmicrohttpd, epoll) for what the
// services serve over HTTP: the metrics page (/metrics, /healthz) and
// decode's OpenAI-compatible API.
//
// Why libmicrohttpd: a small C library packaged by Debian (libmicrohttpd-dev)
// whose epoll loop holds each connection at the cost of a socket and a few KiB,
// with what a front door needs built in: per-connection idle timeouts,
// connection limits, and suspend/resume, so that a response made later on
// another thread (a completion, tokens streamed as server-sent events) holds no
// thread while it waits. Boost.Beast would do as well but needs the session,
// parser and timer code written here; cpp-httplib (what this replaced) holds a
// thread per connection, so slow clients starved everyone.
//
// What it promises:
// - The listen backlog is the system's maximum (net.core.somaxconn); the port
//   is owned exclusively (SO_REUSEADDR only, never SO_REUSEPORT): a second
//   server on the same port fails to start.
// - Connections are held by `threads` event loops; beyond `max_connections`
//   open at once a request is answered 503 and its connection closed.
// - A request must arrive whole (headers and body) within `request_timeout`
//   of the connection opening or of the previous response on it; a
//   connection on which nothing moves for `idle_timeout` is closed (a client
//   that stopped reading a stream included). A response still being made
//   (the connection is suspended) is not timed out.
// - A client that closes its connection before its response was sent in full
//   is noticed at once, also while the response is still being made: the
//   handler's OnClientGone callback runs (decode cancels the calls).
// - Bodies over `max_body_bytes` are refused with 413.
//
// Thread safety: add routes before Start; Start and Stop from one thread.
// Handlers run on the event loop's threads and must not block: a response
// that takes time is given later through the HttpResponder, from any thread.
#ifndef NANOSERVE_BASE_HTTP_SERVER_H_
#define NANOSERVE_BASE_HTTP_SERVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct MHD_Daemon;

namespace nanoserve {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // without the query
  std::string body;
  std::map<std::string, std::string> headers;  // names in lower case
  // The client's address without its port, spelled as gRPC spells a peer
  // (base/tls.h's PeerIdentity::address): "ipv4:10.0.0.7", "ipv6:[::1]"; an
  // IPv4 client of an IPv6 socket as IPv4. Empty if unknown.
  std::string client_address;

  // The header's value, or "" when absent. `name` in lower case.
  std::string Header(const std::string& name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Where a handler puts its answer: a whole response (Respond), or a streamed
// one (StartStream, Write..., End) written with chunked encoding as it comes.
// Each method may be called from any thread, now or after the handler has
// returned; calls after the client has gone (or the server stopped) are
// ignored. REQUIRES: Respond or StartStream once; Write and End after
// StartStream.
class HttpResponder {
 public:
  virtual ~HttpResponder() = default;
  virtual void Respond(HttpResponse response) = 0;
  // Sends `head`'s status and headers, and its body as the first data.
  virtual void StartStream(HttpResponse head) = 0;
  virtual void Write(std::string data) = 0;
  virtual void End() = 0;
  // `on_gone` runs once, on some thread, when the client goes away (or the
  // server stops) before the response was sent in full; at once if it
  // already has. It must not call this responder back synchronously.
  virtual void OnClientGone(std::function<void()> on_gone) = 0;
};

using HttpHandler = std::function<void(const HttpRequest&, std::shared_ptr<HttpResponder>)>;

struct HttpServerOptions {
  // Event loop threads (each an epoll loop holding its share of connections).
  int threads = 2;
  // Connections open at once; a request on a connection beyond them gets 503
  // (and its connection closes). Also raises the process's open-file limit
  // to its hard limit at Start, so that sockets are not the bound.
  int max_connections = 4096;
  // From a connection's opening (or its previous response) until its request
  // has arrived whole: slow or stalled senders are cut off.
  absl::Duration request_timeout = absl::Seconds(10);
  // Nothing received or sent for this long: the connection is closed
  // (whole seconds, at least 1).
  absl::Duration idle_timeout = absl::Seconds(15);
  // On Stop, responses already whole (streams that have ended included) get
  // this long to reach their clients before the connections close.
  absl::Duration flush_timeout = absl::Seconds(2);
  // Largest request body; larger ones get 413.
  int64_t max_body_bytes = 64 << 10;
  // The body of the server's own errors (404, 405, 413, 503) from the status
  // and a message; null: the message as text/plain.
  std::function<HttpResponse(int status, const std::string& message)> error_response;
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  // Stop().
  ~HttpServer();

  // Routes `method` `path` (exact) to `handler`. REQUIRES: before Start.
  void Handle(const std::string& method, const std::string& path, HttpHandler handler);
  // A handler that answers at once.
  void Handle(const std::string& method, const std::string& path,
              std::function<HttpResponse(const HttpRequest&)> handler);

  // Binds `address`, host:port (port 0: any free one; host a numeric address
  // or a name) and serves on threads of its own. Returns the bound port.
  // INVALID_ARGUMENT for an address that is not host:port with a port in
  // [0, 65535]; UNAVAILABLE if it cannot be bound (e.g. the port is taken),
  // with the system's reason.
  absl::StatusOr<int> Start(const std::string& address);

  // Stops accepting, lets responses already whole reach their clients (for
  // at most flush_timeout), ends every other open connection (responses
  // still being made included: their OnClientGone runs) and joins the
  // threads. Idempotent.
  void Stop();

  // Connections open now.
  int connections() const;

  class Impl;  // http_server.cc

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_HTTP_SERVER_H_
