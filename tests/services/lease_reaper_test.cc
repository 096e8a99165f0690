// The store's lease reaper: it releases the leases of holders that stopped
// renewing them a fraction of the TTL after they expire, and stops with its
// owner.
#include "kv_store/server/lease_reaper.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "kv_cache/prefix_cache.h"
#include "kv_store/server/kv_store_handler.h"
#include "tests/test_util/prefix_cache.h"

namespace nanoserve {
namespace lease_reaper_test {

TEST(LeaseReaperTest, ReapsEveryQuarterTtlAtMostEvery100Ms) {
  EXPECT_EQ(LeaseReaper::Period(absl::Seconds(60)), absl::Seconds(15));
  EXPECT_EQ(LeaseReaper::Period(absl::Seconds(1)), absl::Milliseconds(250));
  EXPECT_EQ(LeaseReaper::Period(absl::Milliseconds(200)), absl::Milliseconds(100));
  EXPECT_EQ(LeaseReaper::Period(absl::InfiniteDuration()), absl::Hours(1));
}

TEST(LeaseReaperTest, ReleasesLeasesNotRenewed) {
  const absl::Duration ttl = absl::Milliseconds(200);
  std::unique_ptr<PrefixCache> cache = testing::MakeCache(/*page_size=*/2, /*num_pages=*/4, ttl);
  ASSERT_NE(cache, nullptr);
  KvStoreHandler handler(cache.get(), KvStoreHandlerOptions{}, /*metrics=*/nullptr);
  auto pages = cache->AllocatePages(2);
  ASSERT_TRUE(pages.ok()) << pages.status();
  ASSERT_TRUE(cache->Insert(std::vector<int32_t>{1, 2, 3, 4}, *pages).ok());
  EXPECT_EQ(cache->Stats().active_leases, 1);
  // Expired, but only a reap releases it.
  absl::SleepFor(2 * ttl);
  EXPECT_EQ(cache->Stats().active_leases, 1);

  LeaseReaper reaper(&handler, ttl);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (cache->Stats().active_leases > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(cache->Stats().active_leases, 0);
}

}  // namespace lease_reaper_test
}  // namespace nanoserve
