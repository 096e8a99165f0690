// An HTTP/1.1 server (cpp-httplib) with bounded resources, for what the
// services serve over HTTP: the metrics page (/metrics, /healthz) and
// decode's OpenAI-compatible API. Every connection is served by one of a
// fixed number of threads for as long as it is open (a streamed response
// included); accepted connections beyond them wait in a bounded queue, and
// beyond that the acceptor waits, so new connections wait in the kernel's
// listen backlog. Request bodies over a bound are refused (413); idle or
// half-sent connections time out.
//
// Thread safety: add routes before Start; Start and Stop from one thread.
// Handlers run on the server's threads.
#ifndef NANOSERVE_BASE_HTTP_SERVER_H_
#define NANOSERVE_BASE_HTTP_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include <httplib.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace nanoserve {

struct HttpServerOptions {
  // Connections served at once (one thread each).
  int threads = 32;
  // Accepted connections waiting for a thread; more wait in the kernel.
  int max_waiting_connections = 64;
  // How long a request may take to arrive, and a response write may block
  // (a client that stops reading loses its connection).
  absl::Duration read_timeout = absl::Seconds(1);
  absl::Duration write_timeout = absl::Seconds(1);
  // How long an idle keep-alive connection holds its thread.
  absl::Duration keep_alive_timeout = absl::Seconds(1);
  // Largest request body; larger ones get 413.
  int64_t max_body_bytes = 64 << 10;
};

class HttpServer {
 public:
  explicit HttpServer(const HttpServerOptions& options);
  // Stop().
  ~HttpServer();

  // Where routes are added (Get, Post, ...). REQUIRES: before Start.
  httplib::Server& routes() { return server_; }

  // Binds `address`, host:port (port 0: any free one), and serves on a
  // thread of its own. Returns the bound port. INVALID_ARGUMENT for an
  // address that is not host:port; UNAVAILABLE if it cannot be bound.
  absl::StatusOr<int> Start(const std::string& address);

  // Stops accepting, waits for the connections being served to end (their
  // handlers must return: end long responses first), joins. Idempotent.
  void Stop();

 private:
  httplib::Server server_;
  std::thread thread_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_HTTP_SERVER_H_
