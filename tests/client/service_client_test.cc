// The command lines ServiceStack starts the services with: every service
// gets every model flag (--attention included) from one ServiceModel, the
// addresses of the services it calls, its own options, then its extra flags;
// and where $NANOSERVE_LISTEN_HOST makes them listen.
#include "client/service_client.h"

#include <stdlib.h>

#include <array>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/server_runner.h"

namespace nanoserve {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

ServiceStackOptions Options() {
  ServiceStackOptions o;
  o.bin_dir = "/opt/bin";
  o.work_dir = "/tmp/stack";
  o.model.spec = "random:gpt2-xl";
  o.model.seed = 7;
  o.model.device = "cuda";
  o.model.dtype = "bf16";
  o.model.attention = "fused";
  o.page_size = 8;
  o.pool_mb = 64;
  o.lease_ttl_s = 30;
  o.max_batch = 4;
  o.max_context = 256;
  o.kv_store_flags = {"--chunk_kb=4096"};
  o.prefill_flags = {"--store_timeout_ms=500"};
  o.decode_flags = {"--workers=2"};
  return o;
}

constexpr std::array<int, 3> kPorts = {5001, 5002, 5003};  // by ServiceStack::Which

TEST(ModelFlagsTest, SpellsEveryFieldAsTheServicesFlags) {
  EXPECT_THAT(ModelFlags(Options().model),
              ElementsAre("--model=random:gpt2-xl", "--seed=7", "--device=cuda", "--dtype=bf16",
                          "--attention=fused"));
  EXPECT_THAT(ModelFlags(ServiceModel{}),
              ElementsAre("--model=random:gpt2", "--seed=0", "--device=cpu", "--dtype=fp32",
                          "--attention=naive"));
}

TEST(ServiceArgvTest, KvStore) {
  EXPECT_THAT(
      ServiceArgv(Options(), ServiceStack::kKvStore, kPorts),
      ElementsAre("/opt/bin/nanoserve-kv-store", "--listen=127.0.0.1:5001",
                  "--metrics_listen=127.0.0.1:0", "--port_file=/tmp/stack/nanoserve-kv-store.ports",
                  "--model=random:gpt2-xl", "--seed=7", "--device=cuda", "--dtype=bf16",
                  "--attention=fused", "--page_size=8", "--pool_mb=64", "--lease_ttl_s=30",
                  "--chunk_kb=4096"));
}

TEST(ServiceArgvTest, Prefill) {
  EXPECT_THAT(
      ServiceArgv(Options(), ServiceStack::kPrefill, kPorts),
      ElementsAre("/opt/bin/nanoserve-prefill", "--listen=127.0.0.1:5002",
                  "--metrics_listen=127.0.0.1:0", "--port_file=/tmp/stack/nanoserve-prefill.ports",
                  "--model=random:gpt2-xl", "--seed=7", "--device=cuda", "--dtype=bf16",
                  "--attention=fused", "--kv_store=127.0.0.1:5001", "--store_timeout_ms=500"));
}

TEST(ServiceArgvTest, Decode) {
  EXPECT_THAT(ServiceArgv(Options(), ServiceStack::kDecode, kPorts),
              ElementsAre("/opt/bin/nanoserve-decode", "--listen=127.0.0.1:5003",
                          "--metrics_listen=127.0.0.1:0",
                          "--port_file=/tmp/stack/nanoserve-decode.ports", "--model=random:gpt2-xl",
                          "--seed=7", "--device=cuda", "--dtype=bf16", "--attention=fused",
                          "--kv_store=127.0.0.1:5001", "--prefill=127.0.0.1:5002", "--max_batch=4",
                          "--max_context=256", "--http_listen=127.0.0.1:0", "--workers=2"));
}

// Decode's HTTP API: a fixed port, or none.
TEST(ServiceArgvTest, DecodeHttpPortOrNone) {
  ServiceStackOptions o = Options();
  o.http_port = 8000;
  EXPECT_THAT(ServiceArgv(o, ServiceStack::kDecode, kPorts),
              ::testing::Contains("--http_listen=127.0.0.1:8000"));
  o.http_port = -1;
  EXPECT_THAT(ServiceArgv(o, ServiceStack::kDecode, kPorts), ::testing::Contains("--http_listen="));
}

TEST(ServiceArgvTest, MetricsOffLeavesTheAddressEmpty) {
  ServiceStackOptions o = Options();
  o.metrics = false;
  for (ServiceStack::Which which :
       {ServiceStack::kKvStore, ServiceStack::kPrefill, ServiceStack::kDecode}) {
    EXPECT_EQ(ServiceArgv(o, which, kPorts)[2], "--metrics_listen=") << which;
  }
}

TEST(ServiceArgvTest, EveryServiceGetsTheSameModelFlags) {
  const std::vector<std::string> model = ModelFlags(Options().model);
  for (ServiceStack::Which which :
       {ServiceStack::kKvStore, ServiceStack::kPrefill, ServiceStack::kDecode}) {
    const std::vector<std::string> argv = ServiceArgv(Options(), which, kPorts);
    ASSERT_GE(argv.size(), 4 + model.size());
    EXPECT_THAT(std::vector<std::string>(argv.begin() + 4, argv.begin() + 4 + model.size()),
                ElementsAreArray(model))
        << which;
  }
}

// $NANOSERVE_LISTEN_HOST (the images set 0.0.0.0) moves what a service
// listens on off loopback; what its peers call stays 127.0.0.1.
class ListenHostEnvTest : public ::testing::Test {
 protected:
  void TearDown() override { unsetenv("NANOSERVE_LISTEN_HOST"); }
};

TEST_F(ListenHostEnvTest, UnsetOrEmptyIsLoopback) {
  unsetenv("NANOSERVE_LISTEN_HOST");
  EXPECT_EQ(DefaultListenHost(), "127.0.0.1");
  EXPECT_EQ(WithDefaultListenHost("127.0.0.1:50051"), "127.0.0.1:50051");
  setenv("NANOSERVE_LISTEN_HOST", "", 1);
  EXPECT_EQ(DefaultListenHost(), "127.0.0.1");
}

TEST_F(ListenHostEnvTest, ReplacesTheHostOfTheServicesAddresses) {
  setenv("NANOSERVE_LISTEN_HOST", "0.0.0.0", 1);
  EXPECT_EQ(WithDefaultListenHost("127.0.0.1:9151"), "0.0.0.0:9151");
  EXPECT_EQ(WithDefaultListenHost("no-port"), "no-port");
  const std::vector<std::string> argv = ServiceArgv(Options(), ServiceStack::kDecode, kPorts);
  EXPECT_EQ(argv[1], "--listen=0.0.0.0:5003");
  EXPECT_EQ(argv[2], "--metrics_listen=127.0.0.1:0");
  EXPECT_THAT(argv, Contains("--kv_store=127.0.0.1:5001"));
  EXPECT_THAT(argv, Contains("--prefill=127.0.0.1:5002"));
}

TEST_F(ListenHostEnvTest, BracketsAnIpv6Host) {
  setenv("NANOSERVE_LISTEN_HOST", "::", 1);
  EXPECT_EQ(DefaultListenHost(), "[::]");
  EXPECT_EQ(WithDefaultListenHost("127.0.0.1:50053"), "[::]:50053");
  setenv("NANOSERVE_LISTEN_HOST", "[::1]", 1);
  EXPECT_EQ(WithDefaultListenHost("127.0.0.1:50053"), "[::1]:50053");
}

}  // namespace
}  // namespace nanoserve
