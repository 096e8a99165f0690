// nanoserve-decode's flags and DecodeOptions carry each other, flag for flag
// (tests/test_util/service_flags.h), the flags' defaults are the struct's,
// and what the binary builds from DecodeOptions.
#include "decode_service/decode_flags.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "options/decode_options.h"
#include "tests/test_util/service_flags.h"

namespace nanoserve {
namespace decode_options_test {

// Every field off its default (ranges respected).
DecodeOptions Sample() {
  DecodeOptions o;
  o.service.listen = "0.0.0.0:6003";
  o.service.metrics_listen = "0.0.0.0:9999";
  o.service.port_file = "/tmp/decode.ports";
  o.service.max_message_mb = 64;
  o.service.shutdown_grace_s = 9;
  o.service.tls_cert = "decode.pem";
  o.service.tls_key = "decode.key";
  o.service.tls_ca = "ca.pem";
  o.service.model = {"random:gpt2-xl", 7, "cuda", "bf16", "fused"};
  o.store = {"10.0.0.1:6001", 500, 4096, "shm"};
  o.prefill = "";
  o.max_batch = 4;
  o.max_context = 256;
  o.kv_pool_tokens = 4096;
  o.kv_page_size = 8;
  o.max_queue = 3;
  o.max_tokens_in_flight = 100000;
  o.max_tokens_in_flight_per_caller = 30000;
  o.prefill_chunk = 64;
  o.prefill_timeout_ms = 1500;
  o.workers = 2;
  o.http_listen = "";
  o.http_threads = 5;
  o.http_max_connections = 10;
  o.http_max_body_kb = 16;
  o.http_timeout_s = 30;
  o.api_key = "sk-test";
  o.allow_insecure_http = true;
  o.served_model_name = "tiny";
  o.liveness_stall_s = 7;
  o.slow_turn_ms = 12;
  o.decode_step = "reference";
  return o;
}

TEST(DecodeOptionsTest, EveryFlagRoundTrips) {
  testing::ExpectRoundTrip(Sample(), DecodeOptionsFromFlags);
}

TEST(DecodeOptionsTest, TheFlagsDefaultsAreTheStructs) {
  DecodeOptions defaults;
  // InitService sets these from DecodeOptions::Info(); unset here.
  defaults.service.listen = "";
  defaults.service.metrics_listen = "";
  EXPECT_EQ(DecodeOptionsFromFlags().ToArgv(), defaults.ToArgv());
}

TEST(DecodeOptionsTest, DefaultsAreTheServicesOwn) {
  const DecodeOptions o;
  EXPECT_EQ(o.service.listen, "127.0.0.1:50053");
  EXPECT_EQ(o.service.metrics_listen, "127.0.0.1:9153");
  EXPECT_EQ(o.prefill, "127.0.0.1:50052");
  EXPECT_EQ(o.http_listen, "127.0.0.1:8000");
}

TEST(DecodeOptionsTest, BatchSchedulerOptionsCarryTheSchedulersFlags) {
  auto scheduler = BatchSchedulerOptionsFor(Sample());
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  EXPECT_EQ(scheduler->max_batch, 4);
  EXPECT_EQ(scheduler->capacity, 256);
  EXPECT_EQ(scheduler->pool_tokens, 4096);
  EXPECT_EQ(scheduler->page_size, 8);
  EXPECT_EQ(scheduler->max_queue, 3);
  EXPECT_EQ(scheduler->prefill_chunk, 64);
  EXPECT_EQ(scheduler->slow_turn_ms, 12);
  EXPECT_EQ(scheduler->decode, DecodeKind::kReference);
  DecodeOptions bad = Sample();
  bad.decode_step = "fast";
  EXPECT_EQ(BatchSchedulerOptionsFor(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeStageOptionsFor(Sample()).max_tokens_in_flight, 100000);
  EXPECT_EQ(DecodeStageOptionsFor(Sample()).max_tokens_in_flight_per_caller, 30000);
}

TEST(DecodeOptionsTest, TheHttpApiNamesTheModelUnlessTold) {
  DecodeOptions o = Sample();
  EXPECT_EQ(OpenAiServerOptionsFor(o).model_id, "tiny");
  o.served_model_name = "";
  EXPECT_EQ(OpenAiServerOptionsFor(o).model_id, "random:gpt2-xl");
  EXPECT_EQ(OpenAiServerOptionsFor(o).http.max_body_bytes, 16 << 10);
  EXPECT_EQ(OpenAiServerOptionsFor(o).http.max_connections, 10);
  EXPECT_EQ(OpenAiServerOptionsFor(o).http.threads, 5);
  EXPECT_EQ(OpenAiServerOptionsFor(o).timeout, absl::Seconds(30));
}

TEST(DecodeOptionsTest, AnHttpListenThatIsNoAddressIsRefused) {
  DecodeOptions o = Sample();
  EXPECT_TRUE(CheckDecodeOptions(o).ok());  // empty: off
  o.http_listen = "127.0.0.1:70000";
  EXPECT_EQ(CheckDecodeOptions(o).code(), absl::StatusCode::kInvalidArgument);
  o.http_listen = "127.0.0.1:0";
  EXPECT_TRUE(CheckDecodeOptions(o).ok());
}

TEST(DecodeOptionsTest, TheHttpApiBeyondLoopbackNeedsAKeyOrConsent) {
  DecodeOptions o = Sample();
  o.http_listen = "0.0.0.0:8000";
  EXPECT_TRUE(CheckDecodeOptions(o).ok());  // a key and consent
  o.allow_insecure_http = false;
  EXPECT_TRUE(CheckDecodeOptions(o).ok());  // a key
  EXPECT_EQ(OpenAiServerOptionsFor(o).api_key, "sk-test");
  o.api_key = "";
  if (std::getenv("NANOSERVE_API_KEY") == nullptr) {
    EXPECT_EQ(CheckDecodeOptions(o).code(), absl::StatusCode::kFailedPrecondition);
  }
  o.allow_insecure_http = true;
  EXPECT_TRUE(CheckDecodeOptions(o).ok());
  EXPECT_TRUE(OpenAiServerOptionsFor(o).allow_insecure);
}

}  // namespace decode_options_test
}  // namespace nanoserve
