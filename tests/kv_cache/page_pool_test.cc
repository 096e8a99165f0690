#include "kv_cache/page_pool.h"

#include <gtest/gtest.h>

namespace nanoserve {
namespace page_pool_test {

PagePoolOptions SmallOptions() {
  PagePoolOptions options;
  options.layout.page_size = 4;
  options.layout.n_layer = 2;
  options.layout.n_head = 3;
  options.layout.head_dim = 5;
  // bytes per page: 2 * 2 * 3 * 4 * 5 * 4 = 960
  options.byte_budget = 960 * 7 + 959;
  return options;
}

TEST(PagePoolTest, SizesStorageFromTheBudget) {
  auto pool = PagePool::Create(SmallOptions());
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->bytes_per_page(), 960);
  EXPECT_EQ((*pool)->num_pages(), 7);
  EXPECT_EQ((*pool)->num_free(), 7);
  EXPECT_EQ((*pool)->storage().sizes(), torch::IntArrayRef({7, 2, 2, 3, 4, 5}));
  EXPECT_EQ((*pool)->storage().scalar_type(), torch::kFloat);
}

TEST(PagePoolTest, BytesPerPageFollowsDtype) {
  PagePoolOptions options = SmallOptions();
  options.layout.dtype = torch::kHalf;
  EXPECT_EQ(options.layout.bytes_per_page(), 480);
}

TEST(PagePoolTest, RejectsBadOptions) {
  PagePoolOptions options = SmallOptions();
  options.byte_budget = 959;  // less than one page
  EXPECT_EQ(PagePool::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = SmallOptions();
  options.layout.head_dim = 0;
  EXPECT_EQ(PagePool::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = SmallOptions();
  options.layout.page_size = -1;
  EXPECT_EQ(PagePool::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagePoolTest, AllocateIsAllOrNothing) {
  auto pool = *PagePool::Create(SmallOptions());
  auto first = pool->Allocate(5);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  auto too_many = pool->Allocate(3);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool->num_free(), 2);
  EXPECT_EQ(pool->Allocate(-1).status().code(), absl::StatusCode::kInvalidArgument);
  auto rest = pool->Allocate(2);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(*rest, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(pool->num_free(), 0);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(PagePoolTest, FreeRejectsDoubleFreeWithoutChange) {
  auto pool = *PagePool::Create(SmallOptions());
  std::vector<int32_t> pages = *pool->Allocate(4);  // 0..3
  ASSERT_TRUE(pool->Free({pages[1]}).ok());
  EXPECT_EQ(pool->Free({pages[0], pages[1]}).code(),
            absl::StatusCode::kInvalidArgument);  // 1 is already free
  EXPECT_EQ(pool->Free({pages[0], pages[0]}).code(),
            absl::StatusCode::kInvalidArgument);  // listed twice
  EXPECT_EQ(pool->Free({pages[0], 7}).code(),
            absl::StatusCode::kInvalidArgument);  // out of range
  EXPECT_FALSE(pool->is_free(pages[0]));
  EXPECT_EQ(pool->num_free(), 4);
  EXPECT_TRUE(pool->CheckInvariants().ok());
  ASSERT_TRUE(pool->Free({pages[0], pages[2], pages[3]}).ok());
  EXPECT_EQ(pool->num_free(), 7);
  EXPECT_TRUE(pool->CheckInvariants().ok());
  // Freed pages come back in the order they were passed.
  EXPECT_EQ(*pool->Allocate(3), (std::vector<int32_t>{0, 2, 3}));
}

}  // namespace page_pool_test
}  // namespace nanoserve
