// The decode handler without a network (no prefill or store configured, so
// decode computes prompts itself): the stream carries every token in order
// with its text, then a Finished message; cancellation and bad input end the
// call with their codes.
#include "decode_service/decode_handler.h"

#include <gtest/gtest.h>

#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/service_client.h"
#include "engine/generate.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace decode_handler_test {

class RecordingSink : public GenerateSink {
 public:
  void Send(v1::GenerateResponse message) override {
    absl::MutexLock lock(&mu_);
    EXPECT_FALSE(done_.HasBeenNotified());
    tokens_.push_back(message.token());
    if (tokens_.size() == 2) two_tokens_.Notify();
  }
  void Finish(const grpc::Status& status, v1::GenerateResponse last) override {
    absl::MutexLock lock(&mu_);
    status_ = status;
    last_ = last;
    done_.Notify();
  }
  std::vector<int> ids() {
    absl::MutexLock lock(&mu_);
    std::vector<int> out;
    for (const auto& t : tokens_) out.push_back(t.id());
    return out;
  }

  absl::Mutex mu_;
  std::vector<v1::Token> tokens_;
  grpc::Status status_;
  v1::GenerateResponse last_;
  absl::Notification done_, two_tokens_;
};

class DecodeHandlerTest : public ::testing::Test {
 protected:
  DecodeHandlerTest()
      : model_(testing::TinyModel()),
        tokenizer_(Gpt2Tokenizer::LoadDefault().value()),
        scheduler_(BatchScheduler::Create(model_.get(), BatchSchedulerOptions{}).value()),
        workers_(2),
        stage_(tokenizer_.get(), scheduler_.get(), nullptr, nullptr, &workers_, {}, &metrics_),
        handler_(&stage_) {}

  std::unique_ptr<Gpt2Model> model_;
  std::unique_ptr<Gpt2Tokenizer> tokenizer_;
  std::unique_ptr<BatchScheduler> scheduler_;
  WorkerPool workers_;
  MetricsRegistry metrics_;
  DecodeStage stage_;
  DecodeHandler handler_;
};

TEST_F(DecodeHandlerTest, StreamsTokensThenFinished) {
  const std::vector<int> prompt = {10, 20, 30, 40, 50};
  auto sink = std::make_shared<RecordingSink>();
  handler_.Start(GreedyRequest(prompt, 9), PeerIdentity(), absl::InfiniteFuture(), sink);
  ASSERT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(sink->status_.ok()) << sink->status_.error_message();
  Generator generator(model_.get());
  GenerateOptions options;
  options.max_new_tokens = 9;
  options.stop_at_end_of_text = false;
  const std::vector<int> expected =
      generator.Generate({prompt}, options).value().sequences[0].output_ids;
  testing::ExpectSameGreedy(*model_, prompt, expected, sink->ids());
  std::string text;
  for (size_t i = 0; i < sink->tokens_.size(); ++i) {
    EXPECT_EQ(sink->tokens_[i].index(), static_cast<int64_t>(i));
    text += sink->tokens_[i].text();
  }
  // The pieces are the streaming decoder's: Decode(ids) with invalid UTF-8
  // replaced by U+FFFD.
  StreamingDecoder reference(*tokenizer_);
  std::string expected_text;
  for (int id : sink->ids()) expected_text += reference.Push(id).value();
  expected_text += reference.Flush();
  EXPECT_EQ(text + sink->last_.finished().trailing_text(), expected_text);
  const v1::Finished& f = sink->last_.finished();
  EXPECT_EQ(f.finish_reason(), "length");
  EXPECT_EQ(f.usage().prompt_tokens(), 5);
  EXPECT_EQ(f.usage().output_tokens(), 9);
  EXPECT_EQ(f.usage().recomputed_prompt_tokens(), 5);
  EXPECT_GT(f.timings().ttft_ms(), 0);
  EXPECT_GE(f.timings().total_ms(), f.timings().ttft_ms());
  // Handed to the scheduler, then the first token, the second, the end.
  EXPECT_GT(f.timings().submitted_ms(), 0);
  EXPECT_LE(f.timings().submitted_ms(), f.timings().ttft_ms());
  EXPECT_GE(f.timings().second_token_ms(), f.timings().ttft_ms());
  EXPECT_LE(f.timings().second_token_ms(), f.timings().total_ms());
  EXPECT_NE(metrics_.Render().find("nanoserve_decode_output_tokens_total 9"), std::string::npos);
}

TEST_F(DecodeHandlerTest, CancelEndsTheCallAndFreesTheSlot) {
  auto sink = std::make_shared<RecordingSink>();
  auto call =
      handler_.Start(GreedyRequest({1, 2, 3}, 80), PeerIdentity(), absl::InfiniteFuture(), sink);
  ASSERT_TRUE(sink->two_tokens_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  handler_.Cancel(call);
  ASSERT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(sink->status_.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(sink->ids().size(), 80u);
  absl::Time end = absl::Now() + absl::Seconds(5);
  while (scheduler_->active() > 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(scheduler_->active(), 0);
}

TEST_F(DecodeHandlerTest, BadInputIsInvalidArgument) {
  for (const v1::GenerateRequest& r : {GreedyRequest({}, 4), GreedyRequest({1, 9999}, 4),
                                       GreedyRequest({1, 2}, 0), GreedyRequest({1, 2}, 200)}) {
    auto sink = std::make_shared<RecordingSink>();
    handler_.Start(r, PeerIdentity(), absl::InfiniteFuture(), sink);
    ASSERT_TRUE(sink->done_.WaitForNotificationWithTimeout(absl::Seconds(60)));
    EXPECT_EQ(sink->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(sink->tokens_.empty());
  }
  EXPECT_EQ(scheduler_->steps(), 0);
  // Counted by their code, apart from other failures.
  const std::string page = metrics_.Render();
  EXPECT_NE(page.find("nanoserve_decode_requests_total{code=\"INVALID_ARGUMENT\"} 4"),
            std::string::npos)
      << page;
  EXPECT_NE(page.find("nanoserve_decode_requests_total{code=\"OK\"} 0"), std::string::npos);
}

}  // namespace decode_handler_test
}  // namespace nanoserve
