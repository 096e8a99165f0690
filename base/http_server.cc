#include "base/http_server.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace nanoserve {
namespace {

// httplib's ThreadPool with a bound on the connections waiting for a
// thread: enqueue (the acceptor) waits while the queue is full.
class BoundedThreadPool final : public httplib::TaskQueue {
 public:
  BoundedThreadPool(int threads, int max_waiting) : max_waiting_(max_waiting) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    // At shutdown the job still runs (it closes its socket).
    not_full_.wait(lock, [&] { return jobs_.size() < max_waiting_ || shutdown_; });
    jobs_.push_back(std::move(fn));
    not_empty_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    not_empty_.notify_all();
    not_full_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        not_empty_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shutdown_, and nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        not_full_.notify_one();
      }
      fn();
    }
  }

  const size_t max_waiting_;
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace

HttpServer::HttpServer(const HttpServerOptions& options) {
  const int threads = std::max(options.threads, 1);
  const int waiting = std::max(options.max_waiting_connections, 1);
  server_.new_task_queue = [threads, waiting] { return new BoundedThreadPool(threads, waiting); };
  server_.set_read_timeout(absl::ToChronoMicroseconds(options.read_timeout));
  server_.set_write_timeout(absl::ToChronoMicroseconds(options.write_timeout));
  server_.set_keep_alive_timeout(
      std::max<time_t>(1, absl::ToInt64Seconds(options.keep_alive_timeout)));
  server_.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<int> HttpServer::Start(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad HTTP address '", address, "'"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [::1]:8000
  }
  if (port == 0) {
    port = server_.bind_to_any_port(host);
  } else if (!server_.bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) return absl::UnavailableError(absl::StrCat("cannot bind HTTP on ", address));
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  // httplib's stop() ends only a server already in its accept loop: wait
  // until it is, or a Stop right after Start would leave it accepting.
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (!server_.is_running() && absl::Now() < end) absl::SleepFor(absl::Milliseconds(1));
  return port;
}

void HttpServer::Stop() {
  if (thread_.joinable()) {
    server_.stop();
    thread_.join();
  }
}

}  // namespace nanoserve
