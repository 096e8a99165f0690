// The event-driven HTTP server on a free loopback port, with raw sockets as
// the abusive clients: slow and idle connections cost a socket each and stall
// nobody, a burst of connections is all served (the listen backlog is the
// system's), stalled senders are cut off, connections past the limit get 503,
// a client that hangs up while its response is being made is noticed at once,
// a stream is written as it comes, Stop sends streams that have ended whole
// and cuts the rest, and a port is owned by one server.
#include "base/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace nanoserve {
namespace http_server_test {

// A connected socket to 127.0.0.1:port, or -1.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  return send(fd, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
}

// What arrives on `fd` until it closes, `until` is seen, or `timeout`.
std::string ReadUntil(int fd, absl::Duration timeout, const std::string& until = "") {
  std::string out;
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0) continue;
    char buf[4096];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, n);
    if (!until.empty() && absl::StrContains(out, until)) break;
  }
  return out;
}

// One GET on a connection of its own; the whole response ("" if none).
std::string Get(int port, const std::string& path, absl::Duration timeout = absl::Seconds(5)) {
  const int fd = Connect(port);
  if (fd < 0) return "";
  SendAll(fd, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  std::string out = ReadUntil(fd, timeout);
  close(fd);
  return out;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void Start(HttpServerOptions options = HttpServerOptions()) {
    server_ = std::make_unique<HttpServer>(options);
    server_->Handle("GET", "/health", [](const HttpRequest&) {
      HttpResponse r;
      r.body = "ok";
      return r;
    });
    // Answers after the test says so, from another thread.
    server_->Handle("GET", "/later",
                    [this](const HttpRequest&, std::shared_ptr<HttpResponder> responder) {
                      responder->OnClientGone([this] { gone_.fetch_add(1); });
                      std::lock_guard<std::mutex> lock(mu_);
                      waiting_.push_back(std::move(responder));
                    });
    auto port = server_->Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = *port;
  }

  void TearDown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      waiting_.clear();
    }
    if (server_ != nullptr) server_->Stop();
  }

  size_t Waiting() {
    std::lock_guard<std::mutex> lock(mu_);
    return waiting_.size();
  }

  // Waits (5 s at most) until `n` GET /later requests wait; their responders.
  std::vector<std::shared_ptr<HttpResponder>> AwaitLater(size_t n) {
    const absl::Time end = absl::Now() + absl::Seconds(5);
    while (Waiting() < n && absl::Now() < end) absl::SleepFor(absl::Milliseconds(5));
    std::lock_guard<std::mutex> lock(mu_);
    return waiting_;
  }

  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<std::shared_ptr<HttpResponder>> waiting_;
  std::atomic<int> gone_{0};
};

// The slow-client rows: 500 sockets trickling headers, and /health
// answering within 100 ms throughout (a thread per connection could not).
TEST_F(HttpServerTest, FiveHundredSlowSocketsDoNotDelayHealth) {
  HttpServerOptions o;
  o.request_timeout = absl::Minutes(1);  // they stay attached for the whole test
  Start(o);
  std::vector<int> slow;
  for (int i = 0; i < 500; ++i) {
    const int fd = Connect(port_);
    ASSERT_GE(fd, 0) << i;
    SendAll(fd, "GET /health HTTP/1.1\r\nX-Slow: ");
    slow.push_back(fd);
  }
  // Within 100 ms; the shared test machine may pause this process now and
  // then, so 8 of 10 rounds (a thread per connection answered none).
  int fast = 0;
  for (int round = 0; round < 10; ++round) {
    for (int fd : slow) SendAll(fd, "a");  // a byte each, never the end of the headers
    const absl::Time start = absl::Now();
    const std::string response = Get(port_, "/health");
    const absl::Duration took = absl::Now() - start;
    EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << response;
    EXPECT_LT(took, absl::Seconds(2)) << "round " << round;
    fast += took < absl::Milliseconds(100) ? 1 : 0;
  }
  EXPECT_GE(fast, 8);
  EXPECT_GE(server_->connections(), 500);
  for (int fd : slow) close(fd);
}

// 200 connections at once: every one is answered (a backlog of 5 reset some).
TEST_F(HttpServerTest, ABurstOfConnectionsIsAllServed) {
  Start();
  std::vector<int> fds;
  for (int i = 0; i < 200; ++i) {
    const int fd = Connect(port_);
    ASSERT_GE(fd, 0) << i;
    fds.push_back(fd);
  }
  for (int fd : fds) SendAll(fd, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  int ok = 0;
  for (int fd : fds) {
    ok += absl::StartsWith(ReadUntil(fd, absl::Seconds(10), "ok"), "HTTP/1.1 200") ? 1 : 0;
    close(fd);
  }
  EXPECT_EQ(ok, 200);
}

TEST_F(HttpServerTest, AStalledRequestIsCutOff) {
  HttpServerOptions o;
  o.request_timeout = absl::Milliseconds(500);
  Start(o);
  const int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  SendAll(fd, "GET /health HTTP/1.1\r\n");
  const absl::Time start = absl::Now();
  bool closed = false;
  while (!closed && absl::Now() - start < absl::Seconds(5)) {
    SendAll(fd, "X-Slow: a\r\n");  // never ends its headers
    pollfd p{fd, POLLIN, 0};
    char c;
    closed = poll(&p, 1, 100) > 0 && recv(fd, &c, 1, 0) <= 0;
  }
  EXPECT_TRUE(closed);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  close(fd);
}

TEST_F(HttpServerTest, ConnectionsPastTheLimitGet503) {
  HttpServerOptions o;
  o.max_connections = 8;
  Start(o);
  std::vector<int> idle;
  for (int i = 0; i < 8; ++i) idle.push_back(Connect(port_));
  absl::SleepFor(absl::Milliseconds(200));  // accepted
  EXPECT_TRUE(absl::StartsWith(Get(port_, "/health"), "HTTP/1.1 503"));
  for (int fd : idle) close(fd);
  const absl::Time end = absl::Now() + absl::Seconds(5);
  while (server_->connections() > 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_TRUE(absl::StartsWith(Get(port_, "/health"), "HTTP/1.1 200"));
}

// A response still being made (the connection suspended, no thread held):
// the client hanging up is noticed at once, not when the response comes.
TEST_F(HttpServerTest, AClientThatHangsUpIsNoticedWhileItsResponseIsMade) {
  Start();
  const int fd = Connect(port_);
  SendAll(fd, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
  const absl::Time end = absl::Now() + absl::Seconds(5);
  while (Waiting() == 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(Waiting(), 1u);
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(gone_.load(), 0);
  close(fd);
  const absl::Time closed = absl::Now();
  while (gone_.load() == 0 && absl::Now() < closed + absl::Seconds(5)) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(gone_.load(), 1);
  EXPECT_LT(absl::Now() - closed, absl::Milliseconds(500));
}

// Each Write reaches the client before the next is made; End ends it.
TEST_F(HttpServerTest, AStreamIsWrittenAsItComes) {
  Start();
  const int fd = Connect(port_);
  SendAll(fd, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::vector<std::shared_ptr<HttpResponder>> waiting = AwaitLater(1);
  ASSERT_EQ(waiting.size(), 1u);
  const std::shared_ptr<HttpResponder> responder = waiting[0];
  HttpResponse head;
  head.content_type = "text/event-stream";
  head.body = "data: first\n\n";
  responder->StartStream(head);
  std::string got = ReadUntil(fd, absl::Seconds(5), "first");
  EXPECT_TRUE(absl::StartsWith(got, "HTTP/1.1 200")) << got;
  EXPECT_TRUE(absl::StrContains(got, "text/event-stream")) << got;
  responder->Write("data: second\n\n");
  EXPECT_TRUE(absl::StrContains(ReadUntil(fd, absl::Seconds(5), "second"), "second"));
  responder->End();
  EXPECT_TRUE(absl::StrContains(ReadUntil(fd, absl::Seconds(5), "0\r\n\r\n"), "0\r\n\r\n"));
  EXPECT_EQ(gone_.load(), 0);  // sent in full
  close(fd);
}

// Stop lets streams that have ended reach their clients whole (a drained
// stream's last event is its error: it must not be dropped with the
// connection).
TEST_F(HttpServerTest, StopSendsStreamsThatHaveEndedWhole) {
  Start();
  const int fds[2] = {Connect(port_), Connect(port_)};
  for (int fd : fds) SendAll(fd, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::vector<std::shared_ptr<HttpResponder>> responders = AwaitLater(2);
  ASSERT_EQ(responders.size(), 2u);
  // More than the socket buffers hold while nobody reads: most of it is
  // still in the server when Stop is called.
  const std::string big(8 << 20, 'x');
  for (const auto& r : responders) {
    HttpResponse head;
    head.content_type = "text/event-stream";
    r->StartStream(head);
    r->Write(big);
    r->End();
  }
  const absl::Time stopping = absl::Now();
  std::thread stop([&] { server_->Stop(); });
  for (int fd : fds) {
    const std::string got = ReadUntil(fd, absl::Seconds(10), "\r\n0\r\n\r\n");
    EXPECT_GT(got.size(), big.size());
    EXPECT_TRUE(absl::EndsWith(got, "\r\n0\r\n\r\n")) << got.size();
    close(fd);
  }
  stop.join();
  EXPECT_LT(absl::Now() - stopping, absl::Seconds(5));
  EXPECT_EQ(gone_.load(), 0);  // sent in full
}

// A stream not ended when Stop is called is cut without waiting for it.
TEST_F(HttpServerTest, StopDoesNotWaitForAStreamStillBeingMade) {
  Start();
  const int fd = Connect(port_);
  SendAll(fd, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::vector<std::shared_ptr<HttpResponder>> waiting = AwaitLater(1);
  ASSERT_EQ(waiting.size(), 1u);
  const std::shared_ptr<HttpResponder> responder = waiting[0];
  HttpResponse head;
  head.content_type = "text/event-stream";
  head.body = "data: first\n\n";
  responder->StartStream(head);
  EXPECT_TRUE(absl::StrContains(ReadUntil(fd, absl::Seconds(5), "first"), "first"));
  const absl::Time stopping = absl::Now();
  server_->Stop();
  EXPECT_LT(absl::Now() - stopping, absl::Milliseconds(1500));
  EXPECT_EQ(gone_.load(), 1);  // its maker is told
  close(fd);
}

TEST_F(HttpServerTest, UnknownPathsMethodsAndLargeBodies) {
  HttpServerOptions o;
  o.max_body_bytes = 100;
  Start(o);
  EXPECT_TRUE(absl::StartsWith(Get(port_, "/nothing"), "HTTP/1.1 404"));
  const int fd = Connect(port_);
  SendAll(fd, absl::StrCat("POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
                           std::string(1000, 'x')));
  EXPECT_TRUE(absl::StartsWith(ReadUntil(fd, absl::Seconds(5)), "HTTP/1.1 413"));
  close(fd);
}

// The "second decode on the same ports" row, for HTTP: the port is
// not shared (no SO_REUSEPORT).
TEST_F(HttpServerTest, APortIsOwnedByOneServer) {
  Start();
  HttpServer second{HttpServerOptions()};
  auto port = second.Start(absl::StrCat("127.0.0.1:", port_));
  ASSERT_FALSE(port.ok());
  EXPECT_EQ(port.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(port.status().message(), "in use")) << port.status();
  EXPECT_FALSE(HttpServer(HttpServerOptions()).Start("127.0.0.1:99999").ok());
}

}  // namespace http_server_test
}  // namespace nanoserve
