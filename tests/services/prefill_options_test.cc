// nanoserve-prefill's flags and PrefillOptions carry each other, flag for
// flag (tests/test_util/service_flags.h), and the flags' defaults are the
// struct's.
#include "prefill_service/prefill_flags.h"

#include <gtest/gtest.h>

#include "options/prefill_options.h"
#include "tests/test_util/service_flags.h"

namespace nanoserve {
namespace prefill_options_test {

// Every field off its default (ranges respected).
PrefillOptions Sample() {
  PrefillOptions o;
  o.service.listen = "0.0.0.0:6002";
  o.service.metrics_listen = "0.0.0.0:9999";
  o.service.port_file = "/tmp/prefill.ports";
  o.service.max_message_mb = 64;
  o.service.shutdown_grace_s = 9;
  o.service.tls_cert = "prefill.pem";
  o.service.tls_key = "prefill.key";
  o.service.tls_ca = "ca.pem";
  o.service.model = {"random:gpt2-xl", 7, "cuda", "bf16", "fused"};
  o.store = {"10.0.0.1:6001", 500, 4096, "bytes"};
  o.prefill_chunk = 64;
  o.workers = 3;
  o.batch_window_ms = 20;
  o.slow_batch_ms = 7;
  o.kept_rows_tokens = 2048;
  o.store_match_min_tokens = 96;
  return o;
}

TEST(PrefillOptionsTest, EveryFlagRoundTrips) {
  testing::ExpectRoundTrip(Sample(), PrefillOptionsFromFlags);
}

TEST(PrefillOptionsTest, TheFlagsDefaultsAreTheStructs) {
  PrefillOptions defaults;
  // InitService sets these from PrefillOptions::Info(); unset here.
  defaults.service.listen = "";
  defaults.service.metrics_listen = "";
  EXPECT_EQ(PrefillOptionsFromFlags().ToArgv(), defaults.ToArgv());
}

TEST(PrefillOptionsTest, DefaultsAreTheServicesOwn) {
  const PrefillOptions o;
  EXPECT_EQ(o.service.listen, "127.0.0.1:50052");
  EXPECT_EQ(o.service.metrics_listen, "127.0.0.1:9152");
  EXPECT_EQ(o.store.kv_store, "127.0.0.1:50051");
}

TEST(PrefillOptionsTest, TheStageCarriesPrefillsFlags) {
  const PrefillStageOptions stage = PrefillStageOptionsFor(Sample());
  EXPECT_EQ(stage.prefill_chunk, 64);
  EXPECT_EQ(stage.batch_window, absl::Milliseconds(20));
  EXPECT_EQ(stage.slow_batch, absl::Milliseconds(7));
  EXPECT_EQ(stage.kept_rows_tokens, 2048);
  EXPECT_EQ(stage.store_match_min_tokens, 96);
}

}  // namespace prefill_options_test
}  // namespace nanoserve
