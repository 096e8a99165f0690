// nanoserve-kv-store's flags and KvStoreOptions carry each other, flag for
// flag (tests/test_util/service_flags.h), the flags' defaults are the
// struct's, and what the binary builds from KvStoreOptions.
#include "kv_store/server/kv_store_flags.h"

#include <gtest/gtest.h>

#include "options/kv_store_options.h"
#include "tests/test_util/service_flags.h"

namespace nanoserve {
namespace kv_store_options_test {

// Every field off its default (ranges respected).
KvStoreOptions Sample() {
  KvStoreOptions o;
  o.service.listen = "0.0.0.0:6001";
  o.service.metrics_listen = "0.0.0.0:9999";
  o.service.port_file = "/tmp/kv.ports";
  o.service.max_message_mb = 64;
  o.service.shutdown_grace_s = 9;
  o.service.tls_cert = "kv.pem";
  o.service.tls_key = "kv.key";
  o.service.tls_ca = "ca.pem";
  o.service.model = {"random:gpt2-xl", 7, "cuda", "bf16", "fused"};
  o.page_size = 8;
  o.pool_mb = 64;
  o.lease_ttl_s = 0;
  o.chunk_kb = 4096;
  o.share_pool = false;
  o.pool_identities = "decode";
  o.reservation_ttl_s = 5;
  o.writer_identities = "prefill,decode";
  o.snapshot_dir = "/var/lib/nanoserve";
  o.max_leases_per_caller = 100;
  o.max_pinned_pages_per_caller = 50;
  o.max_puts_per_caller = 4;
  o.max_put_mb_per_caller = 16;
  o.put_idle_timeout_s = 3;
  o.max_reserved_pages_per_caller = 20;
  return o;
}

TEST(KvStoreOptionsTest, EveryFlagRoundTrips) {
  testing::ExpectRoundTrip(Sample(), KvStoreOptionsFromFlags);
}

TEST(KvStoreOptionsTest, TheFlagsDefaultsAreTheStructs) {
  KvStoreOptions defaults;
  // InitService sets these from KvStoreOptions::Info(); unset here.
  defaults.service.listen = "";
  defaults.service.metrics_listen = "";
  defaults.service.model.spec = "";
  EXPECT_EQ(KvStoreOptionsFromFlags().ToArgv(), defaults.ToArgv());
}

TEST(KvStoreOptionsTest, DefaultsAreTheServicesOwn) {
  const KvStoreOptions o;
  EXPECT_EQ(o.service.listen, "127.0.0.1:50051");
  EXPECT_EQ(o.service.metrics_listen, "127.0.0.1:9151");
  // The engines' default, as prefill's and decode's: their models must match.
  EXPECT_EQ(o.service.model.spec, "");
}

// With the defaults, one prefill batch of 64 prompts of 128 tokens of GPT-2
// 124M in bf16 (8 pages of 576 KiB each) is reserved whole in a 1 GiB pool:
// the store's bound and one caller's (prefill and decode are one caller
// without TLS) both hold its 512 pages. They held 455 and 227 when the bound
// was the Put streams' 256 MiB, and the rows past it were not stored.
TEST(KvStoreOptionsTest, TheDefaultsReserveABatchOf64PromptsOfGpt2) {
  Gpt2Config config;  // GPT-2 124M
  ModelOptions model;
  model.dtype = torch::kBFloat16;
  const KvStoreOptions o;  // a 1 GiB pool of 16-token pages
  const PrefixCacheOptions cache = PrefixCacheOptionsFor(o, config, model);
  ASSERT_EQ(cache.pool.layout.bytes_per_page(), 589824);
  auto handler = KvStoreHandlerOptionsFor(o, config, cache, /*tls=*/false);
  ASSERT_TRUE(handler.ok()) << handler.status();
  EXPECT_GE(handler->max_reserved_pages, 64 * 8);
  EXPECT_GE(handler->quotas.max_reserved_pages, 64 * 8);
}

TEST(KvStoreOptionsTest, TheCacheAndHandlerCarryTheStoresFlags) {
  Gpt2Config config;
  config.vocab_size = 100;
  config.n_positions = 64;
  ModelOptions model;
  KvStoreOptions o = Sample();
  const PrefixCacheOptions cache = PrefixCacheOptionsFor(o, config, model);
  EXPECT_EQ(cache.pool.layout.page_size, 8);
  EXPECT_EQ(cache.pool.byte_budget, int64_t{64} << 20);
  EXPECT_EQ(cache.lease_ttl, absl::InfiniteDuration());
  EXPECT_FALSE(cache.pool.exported);
  EXPECT_NE(cache.pool.epoch, 0u);
  o.lease_ttl_s = 30;
  EXPECT_EQ(PrefixCacheOptionsFor(o, config, model).lease_ttl, absl::Seconds(30));

  auto handler = KvStoreHandlerOptionsFor(o, config, cache, /*tls=*/true);
  ASSERT_TRUE(handler.ok()) << handler.status();
  EXPECT_EQ(handler->max_chunk_bytes, 4096 << 10);
  EXPECT_EQ(handler->vocab_size, 100);
  EXPECT_EQ(handler->max_tokens, 64);
  EXPECT_EQ(handler->epoch, cache.pool.epoch);
  EXPECT_EQ(handler->reservation_ttl, absl::Seconds(5));
  EXPECT_EQ(handler->pool_identities, std::vector<std::string>{"decode"});
  EXPECT_EQ(handler->writer_identities, (std::vector<std::string>{"prefill", "decode"}));
  EXPECT_EQ(handler->quotas.max_leases, 100);
  EXPECT_EQ(handler->quotas.max_pinned_pages, 50);
  EXPECT_EQ(handler->quotas.max_puts, 4);
  EXPECT_EQ(handler->quotas.max_put_bytes, int64_t{16} << 20);
  EXPECT_EQ(handler->put_idle_timeout, absl::Seconds(3));
  EXPECT_EQ(handler->quotas.max_reserved_pages, 20);
  // No bound on pinned pages given: three quarters of the pool's pages.
  o.max_pinned_pages_per_caller = 0;
  const int64_t pages = cache.pool.byte_budget / cache.pool.layout.bytes_per_page();
  EXPECT_EQ(KvStoreHandlerOptionsFor(o, config, cache, true)->quotas.max_pinned_pages,
            pages * 3 / 4);
  // All writers may hold half the pool reserved and uncommitted, whatever the
  // Put streams' byte bound; one caller, without a bound given, half of that.
  o.max_reserved_pages_per_caller = 0;
  auto defaults = KvStoreHandlerOptionsFor(o, config, cache, true);
  EXPECT_EQ(defaults->max_reserved_pages, pages / 2);
  EXPECT_EQ(defaults->quotas.max_reserved_pages, pages / 2);
  // Without TLS everyone may write; with TLS someone must be named.
  EXPECT_TRUE(KvStoreHandlerOptionsFor(o, config, cache, false)->writer_identities.empty());
  o.writer_identities = " , ";
  EXPECT_EQ(KvStoreHandlerOptionsFor(o, config, cache, true).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace kv_store_options_test
}  // namespace nanoserve
