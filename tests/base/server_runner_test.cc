// The connection management of base/server_runner.h: servers close
// connections after max_connection_age (clients then re-resolve and reach
// new replicas), and MakeChannel's channels find a peer that comes back
// within two seconds however long it was gone.
#include "base/server_runner.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace nanoserve {
namespace server_runner_test {

// A server with ServeUntilSignal's channel arguments and only the health
// service, on `port` (0: a free one, written back).
std::unique_ptr<grpc::Server> StartServer(const ServerOptions& options, int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", *port), grpc::InsecureServerCredentials(),
                           port);
  ConfigureServerBuilder(options, builder);
  return builder.BuildAndStart();
}

// One health check without waiting for a connection (fail fast).
bool Healthy(grpc::Channel* channel, absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(
      std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));  // not owned
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  grpc::health::v1::HealthCheckResponse response;
  return stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).ok();
}

TEST(ServerRunnerTest, ConnectionsAreClosedAfterMaxConnectionAge) {
  for (const bool aged : {true, false}) {
    ServerOptions options;  // default: 30 s
    if (aged) {
      options.max_connection_age = absl::Milliseconds(500);
      options.max_connection_age_grace = absl::Milliseconds(500);
    }
    int port = 0;
    std::unique_ptr<grpc::Server> server = StartServer(options, &port);
    ASSERT_NE(server, nullptr);
    auto channel = MakeChannel(absl::StrCat("127.0.0.1:", port), 1 << 20);
    ASSERT_TRUE(Healthy(channel.get(), absl::Seconds(5)));
    ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
    // A GOAWAY takes the channel out of READY.
    const bool left_ready = channel->WaitForStateChange(
        GRPC_CHANNEL_READY, std::chrono::system_clock::now() + std::chrono::seconds(3));
    EXPECT_EQ(left_ready, aged) << (aged ? "max_connection_age 500 ms" : "the default, 30 s");
    if (aged) EXPECT_TRUE(Healthy(channel.get(), absl::Seconds(5)));  // and it reconnects
    server->Shutdown();
  }
}

TEST(ServerRunnerTest, APeerBackAfterALongAbsenceIsUsedWithinTwoSeconds) {
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartServer(ServerOptions(), &port);
  ASSERT_NE(server, nullptr);
  auto channel = MakeChannel(absl::StrCat("127.0.0.1:", port), 1 << 20);
  ASSERT_TRUE(Healthy(channel.get(), absl::Seconds(5)));
  server->Shutdown();
  server.reset();
  // Gone for 8 s while calls fail: gRPC's default backoff (1 s growing 1.6x
  // to 120 s) would wait several seconds more before its next attempt.
  const absl::Time gone_until = absl::Now() + absl::Seconds(8);
  while (absl::Now() < gone_until) {
    EXPECT_FALSE(Healthy(channel.get(), absl::Milliseconds(200)));
    absl::SleepFor(absl::Milliseconds(200));
  }
  server = StartServer(ServerOptions(), &port);
  ASSERT_NE(server, nullptr);
  const absl::Time back = absl::Now();
  while (!Healthy(channel.get(), absl::Milliseconds(200)) &&
         absl::Now() - back < absl::Seconds(10)) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const absl::Duration found = absl::Now() - back;
  EXPECT_LT(found, absl::Milliseconds(2200)) << absl::FormatDuration(found);
  server->Shutdown();
}

}  // namespace server_runner_test
}  // namespace nanoserve
