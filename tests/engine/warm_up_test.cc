// The warm-up a service runs before it serves: the shapes fit the batch and
// the context, and a scheduler that ran them is as it was (idle, its pages
// free) and still gives the offline engine's greedy tokens.
#include "engine/warm_up.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "absl/synchronization/notification.h"
#include "engine/generate.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace warm_up_test {

using ::nanoserve::testing::ExpectSameGreedy;
using ::nanoserve::testing::TinyModel;

std::vector<WarmUpShape> Shapes(std::initializer_list<WarmUpShape> list) { return list; }

TEST(WarmUpShapes, OneShortPromptThenAFullBatchWithinTheBoundsAndTheContext) {
  EXPECT_EQ(WarmUpShapes(64, 8192, 1024), Shapes({{1, 16}, {64, 128}}));
  // Rows x tokens within max_tokens; a prompt leaves room for two new tokens.
  EXPECT_EQ(WarmUpShapes(64, 256, 1024), Shapes({{1, 16}, {2, 128}}));
  EXPECT_EQ(WarmUpShapes(64, 8192, 96), Shapes({{1, 16}, {64, 94}}));
  EXPECT_EQ(WarmUpShapes(8, 8192, 12), Shapes({{1, 10}, {8, 10}}));
  EXPECT_EQ(WarmUpShapes(64, 100, 1024), Shapes({{1, 16}}));  // one prompt of 100 is all
  EXPECT_EQ(WarmUpShapes(1, 8192, 1024), Shapes({{1, 16}}));
  EXPECT_TRUE(WarmUpShapes(64, 8192, 2).empty());  // no room for any prompt
}

TEST(WarmUpPrompts, ShapedAndWithinTheVocabulary) {
  const std::vector<std::vector<int>> prompts = WarmUpPrompts({3, 20}, 10);
  ASSERT_EQ(prompts.size(), 3u);
  for (const std::vector<int>& p : prompts) {
    ASSERT_EQ(p.size(), 20u);
    for (int t : p) {
      EXPECT_GE(t, 0);
      EXPECT_LT(t, 10);
    }
  }
  EXPECT_NE(prompts[0], prompts[1]);
}

TEST(WorthWarmingUp, OnlyACudaDevice) {
  EXPECT_FALSE(WorthWarmingUp(torch::Device(torch::kCPU)));
  EXPECT_TRUE(WorthWarmingUp(torch::Device(torch::kCUDA, 0)));
}

TEST(WarmUpScheduler, LeavesTheSchedulerIdleAndItsTokensTheEngines) {
  std::unique_ptr<Gpt2Model> model = TinyModel();
  BatchSchedulerOptions options;
  options.max_batch = 4;
  options.page_size = 4;
  options.pool_tokens = 96;  // one full slot: a page the warm-up kept would show
  std::unique_ptr<BatchScheduler> scheduler = BatchScheduler::Create(model.get(), options).value();
  const std::vector<WarmUpShape> shapes =
      WarmUpShapes(scheduler->max_batch(), 8192, scheduler->capacity());
  ASSERT_EQ(shapes.size(), 2u);
  absl::StatusOr<double> ms = WarmUpScheduler(*scheduler, shapes, model->config().vocab_size);
  ASSERT_TRUE(ms.ok()) << ms.status();
  EXPECT_GT(*ms, 0);
  EXPECT_EQ(scheduler->active(), 0);
  EXPECT_EQ(scheduler->queued(), 0);
  EXPECT_GE(scheduler->prefills(), 2);

  // Every page free again: a request that needs the whole pool runs.
  const std::vector<int> prompt = {5, 6, 7, 8, 9, 10, 11};
  std::vector<int> streamed;
  absl::Status status;
  absl::Notification done;
  BatchRequest r;
  r.prompt = prompt;
  r.max_new_tokens = scheduler->capacity() - static_cast<int64_t>(prompt.size());
  r.stop_at_end_of_text = false;
  r.on_token = [&](int t) { streamed.push_back(t); };
  r.on_done = [&](const absl::Status& s, const BatchResult&) {
    status = s;
    done.Notify();
  };
  ASSERT_TRUE(scheduler->Submit(std::move(r)).ok());
  done.WaitForNotification();
  ASSERT_TRUE(status.ok()) << status;
  Generator generator(model.get());
  GenerateOptions offline;
  offline.max_new_tokens = scheduler->capacity() - static_cast<int64_t>(prompt.size());
  offline.stop_at_end_of_text = false;
  const std::vector<int> expected =
      generator.Generate({prompt}, offline).value().sequences[0].output_ids;
  ExpectSameGreedy(*model, prompt, expected, streamed);
}

}  // namespace warm_up_test
}  // namespace nanoserve
