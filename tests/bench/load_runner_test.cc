#include "bench/load_runner.h"

#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/load_schedule.h"

namespace nanoserve {
namespace load_runner_test {

// Answers every request with max_tokens tokens a millisecond apart (odd
// prompt lengths fail instead), with a server's account whose Prefill call
// took max_tokens ms when max_tokens is even, and remembers the most calls
// it had at once.
class FakeClient : public LoadClient {
 public:
  absl::StatusOr<LoadResponse> Send(const LoadPrompt& prompt, const std::string& cache_salt,
                                    absl::Time deadline) override {
    {
      absl::MutexLock lock(&mu_);
      ++in_flight_;
      most_in_flight_ = std::max(most_in_flight_, in_flight_);
      salts_.push_back(cache_salt);
    }
    LoadResponse response;
    for (int64_t i = 0; i < prompt.max_tokens; ++i) {
      absl::SleepFor(absl::Milliseconds(1));
      response.token_times.push_back(absl::Now());
    }
    response.prompt_tokens = static_cast<int64_t>(prompt.prompt_ids.size());
    if (prompt.max_tokens % 2 == 0) {
      response.server.emplace();
      response.server->prefill_ms = static_cast<double>(prompt.max_tokens);
    }
    absl::MutexLock lock(&mu_);
    --in_flight_;
    if (prompt.prompt_ids.size() % 2 == 1) return absl::UnavailableError("odd prompt");
    EXPECT_GT(deadline, absl::Now());
    return response;
  }
  std::string Describe() const override { return "fake"; }

  int most_in_flight() {
    absl::MutexLock lock(&mu_);
    return most_in_flight_;
  }
  std::vector<std::string> salts() {
    absl::MutexLock lock(&mu_);
    return salts_;
  }

 private:
  absl::Mutex mu_;
  int in_flight_ = 0, most_in_flight_ = 0;
  std::vector<std::string> salts_;
};

std::vector<LoadPrompt> Prompts(int n) {
  std::vector<LoadPrompt> prompts;
  for (int i = 0; i < n; ++i) {
    LoadPrompt p;
    p.prompt_ids.assign(i % 3 == 2 ? 3 : 4, 1);  // every third one fails
    p.max_tokens = 1 + i % 4;
    prompts.push_back(p);
  }
  return prompts;
}

TEST(RunLoad, RecordsEveryRequestInOrderAndCountsFailures) {
  FakeClient client;
  LoadRunOptions o;
  o.rate = std::numeric_limits<double>::infinity();
  o.concurrency = 3;
  o.cache_salt = "salt";
  const std::vector<LoadPrompt> prompts = Prompts(12);
  const LoadRun run = RunLoad(client, prompts, o);
  ASSERT_EQ(run.records.size(), 12u);
  EXPECT_LE(client.most_in_flight(), 3);
  EXPECT_GT(run.duration_s, 0);
  int failed = 0;
  for (size_t i = 0; i < run.records.size(); ++i) {
    const RequestRecord& r = run.records[i];
    EXPECT_EQ(r.index, static_cast<int64_t>(i));
    EXPECT_EQ(r.max_tokens, prompts[i].max_tokens);
    if (i % 3 == 2) {
      ++failed;
      EXPECT_FALSE(r.ok);
      EXPECT_EQ(r.error, "UNAVAILABLE: odd prompt");
      continue;
    }
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.output_tokens, prompts[i].max_tokens);
    EXPECT_EQ(r.itl_ms.size(), static_cast<size_t>(r.output_tokens - 1));
    EXPECT_GT(r.ttft_ms, 0);
    EXPECT_LE(r.ttft_ms, r.e2e_ms);
    EXPECT_LE(r.start_s, run.duration_s);
    // The server's account is the record's, when there was one.
    ASSERT_EQ(r.server.has_value(), r.max_tokens % 2 == 0);
    if (r.server.has_value()) EXPECT_EQ(r.server->prefill_ms, r.max_tokens);
  }
  EXPECT_EQ(failed, 4);
  for (const std::string& salt : client.salts()) EXPECT_EQ(salt, "salt");
}

TEST(RunLoad, OneSlotRunsOneAtATime) {
  FakeClient client;
  LoadRunOptions o;
  o.rate = std::numeric_limits<double>::infinity();
  o.concurrency = 1;
  const LoadRun run = RunLoad(client, Prompts(5), o);
  EXPECT_EQ(client.most_in_flight(), 1);
  for (size_t i = 1; i < run.records.size(); ++i) {
    // Each starts after the one before it ended.
    EXPECT_GE(run.records[i].start_s * 1e3,
              run.records[i - 1].start_s * 1e3 + run.records[i - 1].e2e_ms - 1e-3);
  }
}

TEST(RunLoad, NoRequestIsSentBeforeItsArrivalTime) {
  FakeClient client;
  LoadRunOptions o;
  o.rate = 200;  // a few ms apart
  o.seed = 4;
  const LoadRun run = RunLoad(client, Prompts(6), o);
  const std::vector<absl::Duration> arrivals = PoissonArrivals(6, o.rate, o.seed);
  ASSERT_EQ(run.records.size(), arrivals.size());
  EXPECT_GT(arrivals.back(), absl::ZeroDuration());
  for (size_t i = 0; i < arrivals.size(); ++i) {
    // (The threads may start their calls in another order; none starts early.)
    EXPECT_GE(run.records[i].start_s, absl::ToDoubleSeconds(arrivals[i]) - 1e-4) << i;
  }
}

}  // namespace load_runner_test
}  // namespace nanoserve
