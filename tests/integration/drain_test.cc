// Integration: decode drains on SIGTERM (the real service binaries, as in
// services_test.cc). Readiness fails at once and new calls are refused;
// streams in flight finish within --shutdown_grace_s; those that cannot end
// with a clear status shortly before it runs out: gRPC UNAVAILABLE saying
// to retry, an SSE error event then [DONE]; never a silent cut. GPT-2 124M
// with random weights on the CPU, so that a long stream outlasts the grace.
#include <signal.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "base/server_runner.h"
#include "client/service_client.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace nanoserve {
namespace drain_test {

using nlohmann::json;

// Tokens a long stream asks for: 124M on the CPU takes many seconds.
constexpr int kLongStream = 900;

class DrainTest : public ::testing::Test {
 protected:
  void StartStack(int grace_s) {
    char dir[] = "/tmp/nanoserve_drain_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    ServiceStackOptions o;
    o.bin_dir = NANOSERVE_BIN_DIR;
    o.work_dir = dir_;
    o.model.spec = "random:gpt2";
    o.kv_store.pool_mb = 256;
    o.decode.max_batch = 4;  // 4 x 1024 tokens of KV: 300 MB
    o.decode_flags = {absl::StrCat("--shutdown_grace_s=", grace_s)};
    auto stack = ServiceStack::Start(o);
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = *std::move(stack);
    decode_ = v1::Decode::NewStub(MakeChannel(stack_->target(ServiceStack::kDecode), 8 << 20));
  }

  void TearDown() override {
    decode_.reset();
    if (stack_ != nullptr) EXPECT_TRUE(stack_->Stop().ok());
    if (!dir_.empty()) std::system(absl::StrCat("rm -rf ", dir_).c_str());
  }

  // SIGTERM to decode.
  void Terminate() {
    sigterm_at_ = absl::Now();
    stack_->process(ServiceStack::kDecode)->Signal(SIGTERM);
  }

  // Decode's exit code once it exits (within `timeout`).
  int DecodeExit(absl::Duration timeout) {
    auto code = stack_->process(ServiceStack::kDecode)->Wait(timeout);
    EXPECT_TRUE(code.ok()) << code.status();
    return code.ok() ? *code : -1;
  }

  // A streamed completion over HTTP: every "data:" line's payload, in order.
  // `on_first` runs once the first event has come.
  std::vector<std::string> HttpStream(int max_tokens, const std::function<void()>& on_first) {
    httplib::Client http("127.0.0.1", stack_->http_port());
    http.set_read_timeout(120, 0);
    const json body = {{"model", "random:gpt2"},   {"prompt", "The drain test says"},
                       {"max_tokens", max_tokens}, {"temperature", 0},
                       {"ignore_eos", true},       {"stream", true}};
    std::string buffer;
    std::vector<std::string> events;
    bool first = true;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.body = body.dump();
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      buffer.append(data, n);
      size_t end;
      while ((end = buffer.find("\n\n")) != std::string::npos) {
        absl::string_view event(buffer.data(), end);
        if (absl::ConsumePrefix(&event, "data: ")) {
          events.emplace_back(event);
          if (first) {
            first = false;
            if (on_first) on_first();
          }
        }
        buffer.erase(0, end + 2);
      }
      return true;
    };
    auto res = http.send(req);
    EXPECT_TRUE(res) << httplib::to_string(res.error());
    if (res) EXPECT_EQ(res->status, 200);
    return events;
  }

  std::string dir_;
  std::unique_ptr<ServiceStack> stack_;
  std::unique_ptr<v1::Decode::Stub> decode_;
  absl::Time sigterm_at_;
  std::atomic<bool> stop_stream_{false};
};

void NotifyOnce(absl::Notification& n) {
  if (!n.HasBeenNotified()) n.Notify();
}

// A stream the grace period lets finish arrives whole after SIGTERM.
TEST_F(DrainTest, StreamInFlightFinishesWholeWithinTheGrace) {
  ASSERT_NO_FATAL_FAILURE(StartStack(/*grace_s=*/60));
  constexpr int kTokens = 40;
  std::atomic<bool> signalled{false};
  auto out = StreamGenerate(*decode_, GreedyRequest({464, 1332, 1110, 318}, kTokens),
                            absl::Seconds(120), [&](const v1::Token&) {
                              if (!signalled.exchange(true)) Terminate();
                              return true;
                            });
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->output_ids.size(), static_cast<size_t>(kTokens));
  EXPECT_EQ(out->finished.finish_reason(), "length");
  EXPECT_EQ(out->finished.usage().output_tokens(), kTokens);
  EXPECT_EQ(DecodeExit(absl::Seconds(30)), 0);
}

// Streams longer than the grace end with a clear status before the process
// exits: gRPC UNAVAILABLE with the retry hint, SSE an error event then
// [DONE]; both after the tokens made so far, within the grace.
TEST_F(DrainTest, StreamsTheGraceCannotFinishEndWithAClearError) {
  constexpr int kGraceS = 8;  // its margin: 2 s, for a slow step on a loaded machine
  ASSERT_NO_FATAL_FAILURE(StartStack(kGraceS));
  absl::Notification grpc_started, http_started;
  std::vector<std::string> sse;
  std::thread http([&] {
    sse = HttpStream(kLongStream, [&] { NotifyOnce(http_started); });
    NotifyOnce(http_started);  // if it failed before any event
  });
  absl::StatusOr<GenerateOutcome> out;
  int64_t grpc_tokens = 0;
  std::thread grpc([&] {
    out = StreamGenerate(*decode_, GreedyRequest({464, 1332, 1110, 318}, kLongStream),
                         absl::Seconds(120), [&](const v1::Token&) {
                           ++grpc_tokens;
                           NotifyOnce(grpc_started);
                           return true;
                         });
    NotifyOnce(grpc_started);
  });
  ASSERT_TRUE(grpc_started.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(http_started.WaitForNotificationWithTimeout(absl::Seconds(60)));
  Terminate();
  grpc.join();
  const absl::Duration grpc_ended = absl::Now() - sigterm_at_;
  http.join();
  const absl::Duration http_ended = absl::Now() - sigterm_at_;

  ASSERT_FALSE(out.ok()) << "the stream finished: make it longer";
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable) << out.status();
  EXPECT_TRUE(absl::StrContains(out.status().message(), "shutting down")) << out.status();
  EXPECT_TRUE(absl::StrContains(out.status().message(), "retry")) << out.status();
  EXPECT_GT(grpc_tokens, 0);
  EXPECT_LT(grpc_tokens, kLongStream);
  // Ended by decode shortly before the grace ran out (UNAVAILABLE above, not
  // the deadline's CANCELLED), after the margin (a step may be slow here).
  EXPECT_LT(grpc_ended, absl::Seconds(kGraceS + 1));
  EXPECT_GT(grpc_ended, absl::Seconds(kGraceS) - EndUnfinishedMargin(absl::Seconds(kGraceS)) -
                            absl::Milliseconds(200));

  ASSERT_GE(sse.size(), 3u);
  EXPECT_EQ(sse.back(), "[DONE]");
  const json error = json::parse(sse[sse.size() - 2], nullptr, false);
  ASSERT_TRUE(error.contains("error")) << sse[sse.size() - 2];
  EXPECT_EQ(error["error"]["type"], "server_error");
  EXPECT_TRUE(absl::StrContains(error["error"]["message"].get<std::string>(), "retry"));
  for (size_t i = 0; i + 2 < sse.size(); ++i) {  // the tokens before it
    EXPECT_TRUE(json::parse(sse[i], nullptr, false).contains("choices")) << sse[i];
  }
  EXPECT_LT(http_ended, absl::Seconds(kGraceS + 2));
  EXPECT_EQ(DecodeExit(absl::Seconds(10)), 0);
}

// On SIGTERM readiness fails at once (gRPC health, /healthz, the HTTP API's
// /health) and new calls are refused, while a stream still runs; liveness
// (/livez) still passes.
TEST_F(DrainTest, ReadinessFailsAtOnceAndNewCallsAreRefused) {
  ASSERT_NO_FATAL_FAILURE(StartStack(/*grace_s=*/60));
  const int metrics_port = stack_->metrics_port(ServiceStack::kDecode);
  const int http_port = stack_->http_port();
  httplib::Client metrics("127.0.0.1", metrics_port);
  httplib::Client api("127.0.0.1", http_port);
  auto before = metrics.Get("/healthz");
  ASSERT_TRUE(before);
  ASSERT_EQ(before->status, 200);
  auto live = metrics.Get("/livez");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(live->body, "ok\n");

  absl::Notification started;
  absl::StatusOr<GenerateOutcome> running;
  std::thread stream([&] {
    running = StreamGenerate(*decode_, GreedyRequest({464, 1332}, kLongStream), absl::Seconds(120),
                             [&](const v1::Token&) {
                               NotifyOnce(started);
                               return !stop_stream_.load();
                             });
    NotifyOnce(started);
  });
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(60)));
  Terminate();

  // Within 500 ms: every readiness check says no.
  absl::SleepFor(absl::Milliseconds(300));
  auto healthz = metrics.Get("/healthz");
  ASSERT_TRUE(healthz);
  EXPECT_EQ(healthz->status, 503);
  auto health = api.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  auto livez = metrics.Get("/livez");  // liveness: a drain is no reason to restart
  ASSERT_TRUE(livez);
  EXPECT_EQ(livez->status, 200) << livez->body;
  auto health_stub = grpc::health::v1::Health::NewStub(
      MakeChannel(stack_->target(ServiceStack::kDecode), 1 << 20));
  grpc::ClientContext check_context;
  check_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckResponse check;
  const grpc::Status checked =
      health_stub->Check(&check_context, grpc::health::v1::HealthCheckRequest(), &check);
  EXPECT_FALSE(checked.ok() && check.status() == grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_LT(absl::Now() - sigterm_at_, absl::Milliseconds(2500));

  // New calls are refused, over gRPC and HTTP; the stream still runs.
  auto refused = StreamGenerate(*decode_, GreedyRequest({464}, 4), absl::Seconds(10));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  const json body = {{"model", "random:gpt2"}, {"prompt", "x"}, {"max_tokens", 2}};
  auto completion = api.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(completion);
  EXPECT_EQ(completion->status, 503);
  EXPECT_TRUE(stack_->process(ServiceStack::kDecode)->running());

  stop_stream_.store(true);  // the client goes; decode then exits
  stream.join();
  EXPECT_EQ(DecodeExit(absl::Seconds(30)), 0);
}

}  // namespace drain_test
}  // namespace nanoserve
