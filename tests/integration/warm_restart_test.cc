// Integration: the KV store restarts warm (the real service binaries, as in
// services_test.cc). With --snapshot_dir, a store stopped with SIGTERM saves
// its cached prefixes, and the next one loads them: a prompt cached before
// the restart is a prefix hit after it, with the same greedy tokens, under a
// new pool epoch that the clients map again, and the store's /metrics says
// what it loaded. A corrupt snapshot starts the store cold, never stops it.
// `nanoserve serve --snapshot_dir` gives its store the same warm restart.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/server_runner.h"
#include "client/service_client.h"
#include "client/subprocess.h"
#include "engine/checkpoint.h"
#include "engine/generate.h"
#include "engine/model_loader.h"
#include "kv_cache/snapshot.h"
#include "kv_store/client/kv_store_client.h"
#include "tests/test_util/metrics.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace warm_restart_test {

using ::nanoserve::testing::ExpectSameGreedy;
using ::nanoserve::testing::MetricValue;

constexpr int64_t kPageSize = 8;

class WarmRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/nanoserve_warm_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    const std::string model_dir = dir_ + "/model";
    ASSERT_TRUE(SaveCheckpoint(model_dir, testing::TinyCheckpoint()).ok());
    model_ = LoadModel(model_dir, ModelOptions()).value().model;
    ServiceStackOptions o;
    o.bin_dir = NANOSERVE_BIN_DIR;
    o.work_dir = dir_;
    o.model.spec = model_dir;
    o.kv_store.page_size = kPageSize;
    o.kv_store.pool_mb = 16;
    o.kv_store.snapshot_dir = dir_ + "/snapshots";
    o.prefill_flags = {"--store_timeout_ms=2000"};
    o.decode_flags = {"--store_timeout_ms=2000", "--prefill_timeout_ms=2000"};
    auto stack = ServiceStack::Start(o);
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = *std::move(stack);
    decode_ = v1::Decode::NewStub(MakeChannel(stack_->target(ServiceStack::kDecode), 8 << 20));
    KvStoreClientOptions s;
    s.target = stack_->target(ServiceStack::kKvStore);
    store_ = std::make_unique<KvStoreClient>(s);
  }

  void TearDown() override {
    decode_.reset();
    store_.reset();
    if (stack_ != nullptr) EXPECT_TRUE(stack_->Stop().ok());
    std::system(absl::StrCat("rm -rf ", dir_).c_str());
  }

  static std::vector<int> Prompt(int length, int salt) {
    std::vector<int> p;
    for (int i = 0; i < length; ++i) p.push_back((i * 29 + salt * 89 + 5) % 512);
    return p;
  }

  std::vector<int> Offline(const std::vector<int>& prompt, int64_t max_new) {
    Generator generator(model_.get());
    const GenerateOptions options = testing::GreedyOptions(KvCacheMode::kOn, max_new);
    return generator.Generate({prompt}, options).value().sequences[0].output_ids;
  }

  // SIGTERM to the store (a graceful stop: it saves), then a new store on
  // the same port; returns the new store's log lines so far.
  std::string RestartStore(const std::function<void()>& between = nullptr) {
    Subprocess* store = stack_->process(ServiceStack::kKvStore);
    store->Signal(SIGTERM);
    auto code = store->Wait(absl::Seconds(30));
    EXPECT_TRUE(code.ok() && *code == 0) << (code.ok() ? *code : -1);
    if (between) between();
    EXPECT_TRUE(stack_->Restart(ServiceStack::kKvStore).ok());
    std::ifstream in(stack_->log_path(ServiceStack::kKvStore));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // The store's Stats once our channel has reconnected to the new store
  // (within 30 s: gRPC's reconnection backoff and the client's breaker, which
  // opened while the store was down, both wait; longer on a loaded machine).
  absl::StatusOr<v1::StatsResponse> StoreStats() {
    const absl::Time end = absl::Now() + absl::Seconds(30);
    absl::StatusOr<v1::StatsResponse> stats = store_->Stats();
    while (!stats.ok() && absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(200));
      stats = store_->Stats();
    }
    return stats;
  }

  // The store's /metrics page ("" when it cannot be read).
  std::string StoreMetrics() {
    httplib::Client http("127.0.0.1", stack_->metrics_port(ServiceStack::kKvStore));
    auto res = http.Get("/metrics");
    return res && res->status == 200 ? res->body : "";
  }

  // Generates until the services use the store again (no fallback); each
  // try a new prompt starting with `prefix`. The last outcome.
  GenerateOutcome GenerateThroughTheStore(const std::vector<int>& prefix) {
    GenerateOutcome outcome;
    for (int attempt = 0; attempt < 50; ++attempt) {
      std::vector<int> prompt = prefix;
      for (int i = 0; i < 3; ++i) prompt.push_back(400 + attempt * 3 + i);
      auto out = StreamGenerate(*decode_, GreedyRequest(prompt, 6), absl::Seconds(30));
      EXPECT_TRUE(out.ok()) << out.status();
      if (!out.ok()) break;
      outcome = *out;
      ExpectSameGreedy(*model_, prompt, Offline(prompt, 6), out->output_ids);
      if (out->finished.fallback_reason().empty()) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
    EXPECT_EQ(outcome.finished.fallback_reason(), "");
    return outcome;
  }

  std::string dir_;
  std::unique_ptr<Gpt2Model> model_;
  std::unique_ptr<ServiceStack> stack_;
  std::unique_ptr<v1::Decode::Stub> decode_;
  std::unique_ptr<KvStoreClient> store_;
};

TEST_F(WarmRestartTest, ARestartedStoreKeepsAPrefixHit) {
  const std::vector<int> prompt = Prompt(35, 1);  // 4 whole pages of 8
  auto first = StreamGenerate(*decode_, GreedyRequest(prompt, 6), absl::Seconds(30));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->finished.usage().cached_prompt_tokens(), 0);
  const v1::StatsResponse before = store_->Stats().value();
  ASSERT_GE(before.pages_cached(), 4);
  const std::string cold = StoreMetrics();
  EXPECT_EQ(MetricValue(cold, "nanoserve_kv_store_snapshot_pages_loaded"), 0) << cold;
  EXPECT_EQ(MetricValue(cold, "nanoserve_kv_store_snapshot_load_seconds"), 0) << cold;

  const std::string log = RestartStore();
  EXPECT_TRUE(absl::StrContains(log, "cold start")) << log;  // the first start
  EXPECT_TRUE(absl::StrContains(log, "snapshot saved")) << log;
  EXPECT_TRUE(absl::StrContains(log, "warm start")) << log;
  auto after = StoreStats();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->pages_cached(), before.pages_cached());
  EXPECT_EQ(after->lookups(), 0);  // a new process: the pages came from the file
  EXPECT_EQ(after->active_leases(), 0);
  EXPECT_NE(after->epoch(), before.epoch());  // peers map the new pool again
  EXPECT_EQ(after->pool_export(), before.pool_export());
  const std::string warm = StoreMetrics();
  EXPECT_EQ(MetricValue(warm, "nanoserve_kv_store_snapshot_pages_loaded"), before.pages_cached())
      << warm;
  EXPECT_EQ(MetricValue(warm, "nanoserve_kv_store_snapshot_tokens_loaded"),
            before.pages_cached() * kPageSize);
  EXPECT_GT(MetricValue(warm, "nanoserve_kv_store_snapshot_load_seconds"), 0);

  // The same prompt and then some: its cached pages are a hit, read over
  // the new mapping, and the tokens are the offline engine's.
  const GenerateOutcome hit = GenerateThroughTheStore(prompt);
  EXPECT_GE(hit.finished.usage().cached_prompt_tokens(), 32);
}

TEST_F(WarmRestartTest, ACorruptSnapshotStartsTheStoreCold) {
  const std::vector<int> prompt = Prompt(35, 2);
  ASSERT_TRUE(StreamGenerate(*decode_, GreedyRequest(prompt, 6), absl::Seconds(30)).ok());
  const std::string snapshot = dir_ + "/snapshots/" + kSnapshotFile;
  const std::string log = RestartStore([&] {
    ASSERT_EQ(truncate(snapshot.c_str(), 200), 0);  // torn, as a bad disk would
  });
  EXPECT_TRUE(absl::StrContains(log, "cold start: " + snapshot + ": DATA_LOSS")) << log;
  auto stats = StoreStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->pages_cached(), 0);
  GenerateThroughTheStore(prompt);  // it serves, with the offline engine's tokens
}

// `nanoserve serve --snapshot_dir D`, twice: the first serve's store saves
// its cache to D when serve stops, the second's loads it, and the second
// serve's prompt (the first's) is a prefix hit.
TEST(ServeWarmRestartTest, ServeGivesItsStoreTheSnapshotDir) {
  char dir[] = "/tmp/nanoserve_serve_warm_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string d = dir;
  ASSERT_TRUE(SaveCheckpoint(d + "/model", testing::TinyCheckpoint()).ok());
  // 20 tokens below the tiny model's vocabulary of 512: two whole pages of 8.
  const std::string serve = absl::StrCat(
      NANOSERVE_BIN_DIR, "/nanoserve serve --model ", d, "/model --work_dir ", d,
      " --snapshot_dir ", d, "/snapshots --kv_store_port 0 --prefill_port 0 --decode_port 0",
      " --http_port -1 --page_size 8 --pool_mb 16 --max_new_tokens 2 --ignore_eos --json",
      " --prompt 'a b c d e f g h The in of to and a b c d e f g'");
  auto run = [&](int i) {
    const std::string out = absl::StrCat(d, "/serve", i, ".json");
    auto child = Subprocess::Start({"/bin/sh", "-c", absl::StrCat(serve, " >", out)},
                                   absl::StrCat(d, "/serve", i, ".log"));
    EXPECT_TRUE(child.ok()) << child.status();
    if (!child.ok()) return nlohmann::json();
    auto code = (*child)->Wait(absl::Seconds(120));
    EXPECT_TRUE(code.ok() && *code == 0) << (code.ok() ? *code : -1) << " (see " << d << ")";
    std::ifstream in(out);
    return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  };
  auto cached = [](const nlohmann::json& out) {  // proto JSON: an int64 is a string
    return std::stoll(out["finished"]["usage"]["cached_prompt_tokens"].get<std::string>());
  };
  const nlohmann::json first = run(1);
  ASSERT_TRUE(first.contains("finished")) << first;
  EXPECT_EQ(cached(first), 0);
  EXPECT_EQ(access((d + "/snapshots/" + kSnapshotFile).c_str(), F_OK), 0);

  const nlohmann::json second = run(2);
  ASSERT_TRUE(second.contains("finished")) << second;
  EXPECT_EQ(second["output_ids"], first["output_ids"]);
  EXPECT_GE(cached(second), 16) << second;
  std::ifstream in(d + "/nanoserve-kv-store.log");
  const std::string log(std::istreambuf_iterator<char>(in), {});
  EXPECT_TRUE(absl::StrContains(log, "snapshot saved")) << log;
  EXPECT_TRUE(absl::StrContains(log, "warm start")) << log;
  if (!HasFailure()) std::system(absl::StrCat("rm -rf ", d).c_str());
}

}  // namespace warm_restart_test
}  // namespace nanoserve
