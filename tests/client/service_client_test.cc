// The command lines ServiceStack starts the services with: each service's
// options struct, every flag it takes, with what the stack decides over it
// (addresses, port file, every model flag from one ServiceModel, the
// addresses of the services it calls), then its extra flags; and where
// $NANOSERVE_LISTEN_HOST makes them listen.
#include "client/service_client.h"

#include <stdlib.h>

#include <array>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/server_runner.h"

namespace nanoserve {
namespace service_client_test {

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
  o.kv_store.page_size = 8;
  o.kv_store.pool_mb = 64;
  o.kv_store.lease_ttl_s = 30;
  o.prefill.prefill_chunk = 32;
  o.decode.max_batch = 4;
  o.decode.max_context = 256;
  o.decode.kv_page_size = 8;
  o.decode.decode_step = "reference";
  o.kv_store_flags = {"--chunk_kb=4096"};
  o.prefill_flags = {"--store_timeout_ms=500"};
  o.decode_flags = {"--workers=2"};
  return o;
}

constexpr std::array<int, 3> kPorts = {5001, 5002, 5003};  // by ServiceStack::Which

TEST(ServiceModelTest, SpellsEveryFieldAsTheServicesFlags) {
  EXPECT_THAT(Options().model.ToArgv(),
              ElementsAre("--model=random:gpt2-xl", "--seed=7", "--device=cuda", "--dtype=bf16",
                          "--attention=fused"));
  EXPECT_EQ(ServiceStackOptions().model.spec, "random:gpt2");
}

// The binary, the stack's server flags first, then the rest of the options.
TEST(ServiceArgvTest, KvStore) {
  const std::vector<std::string> argv = ServiceArgv(Options(), ServiceStack::kKvStore, kPorts);
  EXPECT_THAT(std::vector<std::string>(argv.begin(), argv.begin() + 4),
              ElementsAre("/opt/bin/nanoserve-kv-store", "--listen=127.0.0.1:5001",
                          "--metrics_listen=127.0.0.1:0",
                          "--port_file=/tmp/stack/nanoserve-kv-store.ports"));
  KvStoreOptions expected = Options().kv_store;
  expected.service.listen = "127.0.0.1:5001";
  expected.service.metrics_listen = "127.0.0.1:0";
  expected.service.port_file = "/tmp/stack/nanoserve-kv-store.ports";
  expected.service.model = Options().model;
  std::vector<std::string> want = {"/opt/bin/nanoserve-kv-store"};
  AppendArgv(expected.ToArgv(), &want);
  want.push_back("--chunk_kb=4096");
  EXPECT_THAT(argv, ElementsAreArray(want));
  EXPECT_THAT(argv, Contains("--page_size=8"));
  EXPECT_THAT(argv, Contains("--pool_mb=64"));
  EXPECT_THAT(argv, Contains("--lease_ttl_s=30"));
}

TEST(ServiceArgvTest, Prefill) {
  const std::vector<std::string> argv = ServiceArgv(Options(), ServiceStack::kPrefill, kPorts);
  PrefillOptions expected = Options().prefill;
  expected.service.listen = "127.0.0.1:5002";
  expected.service.metrics_listen = "127.0.0.1:0";
  expected.service.port_file = "/tmp/stack/nanoserve-prefill.ports";
  expected.service.model = Options().model;
  expected.store.kv_store = "127.0.0.1:5001";
  std::vector<std::string> want = {"/opt/bin/nanoserve-prefill"};
  AppendArgv(expected.ToArgv(), &want);
  want.push_back("--store_timeout_ms=500");
  EXPECT_THAT(argv, ElementsAreArray(want));
  EXPECT_THAT(argv, Contains("--prefill_chunk=32"));
}

TEST(ServiceArgvTest, Decode) {
  const std::vector<std::string> argv = ServiceArgv(Options(), ServiceStack::kDecode, kPorts);
  DecodeOptions expected = Options().decode;
  expected.service.listen = "127.0.0.1:5003";
  expected.service.metrics_listen = "127.0.0.1:0";
  expected.service.port_file = "/tmp/stack/nanoserve-decode.ports";
  expected.service.model = Options().model;
  expected.store.kv_store = "127.0.0.1:5001";
  expected.prefill = "127.0.0.1:5002";
  expected.http_listen = "127.0.0.1:0";
  std::vector<std::string> want = {"/opt/bin/nanoserve-decode"};
  AppendArgv(expected.ToArgv(), &want);
  want.push_back("--workers=2");
  EXPECT_THAT(argv, ElementsAreArray(want));
  for (const char* flag :
       {"--max_batch=4", "--max_context=256", "--kv_page_size=8", "--decode_step=reference",
        "--kv_store=127.0.0.1:5001", "--prefill=127.0.0.1:5002", "--http_listen=127.0.0.1:0"}) {
    EXPECT_THAT(argv, Contains(flag));
  }
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
  for (const std::string& flag : Options().model.ToArgv()) {
    for (ServiceStack::Which which :
         {ServiceStack::kKvStore, ServiceStack::kPrefill, ServiceStack::kDecode}) {
      EXPECT_THAT(ServiceArgv(Options(), which, kPorts), Contains(flag)) << which;
    }
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

}  // namespace service_client_test
}  // namespace nanoserve
