// Integration: overload. 1000 Generate calls against a decode service with
// 4 slots and a queue of 8 (the real binaries, tiny model), in ten bursts of
// 100 calls 100 ms apart: each burst finds the slots and queue full, and
// the calls admitted between bursts run to the end beside the refusals.
// Promised (docs/services.md, Reliability): every call ends with OK or
// RESOURCE_EXHAUSTED before its deadline; each service's peak resident
// memory (VmHWM) stays under kRssBoundMib; the store's pages and leases
// are all unpinned afterwards; the service still serves.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"
#include "base/server_runner.h"
#include "client/service_client.h"
#include "engine/checkpoint.h"
#include "kv_store/client/kv_store_client.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace overload_test {

constexpr int kCalls = 1000;
constexpr int64_t kMaxBatch = 4;
constexpr int64_t kMaxQueue = 8;
constexpr absl::Duration kDeadline = absl::Seconds(30);
constexpr int kBursts = 10;
constexpr absl::Duration kBurstGap = absl::Milliseconds(100);
// Peak resident memory allowed per service. Measured on the 2-core dev VM
// (LibTorch 1.13 CPU, tiny model, 16 MiB pool): kv store ~170 MiB, prefill
// ~180 MiB, decode ~215 MiB, most of it LibTorch's code and arenas, the
// same before and after the run; 512 MiB leaves room for allocator noise
// and catches per-call growth (1000 calls x 0.3 MiB). Under AddressSanitizer
// (scripts/sanitize.sh builds the services with it too) its shadow memory
// and quarantine come on top: 426, 503 and 605 MiB measured, so the bound
// there is three times as high.
#if defined(__SANITIZE_ADDRESS__)
#define NANOSERVE_OVERLOAD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NANOSERVE_OVERLOAD_ASAN 1
#endif
#endif
#ifdef NANOSERVE_OVERLOAD_ASAN
constexpr int64_t kRssBoundMib = 3 * 512;
#else
constexpr int64_t kRssBoundMib = 512;
#endif

// A kB field ("VmHWM", "VmRSS") of /proc/<pid>/status, in MiB; -1 if absent.
int64_t ProcStatusMib(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    int64_t kb = 0;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits += c;
    }
    return absl::SimpleAtoi(digits, &kb) ? kb / 1024 : -1;
  }
  return -1;
}

// One Generate call on the callback API: reads to the end, records how and
// when it ended.
class GenerateCall final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  GenerateCall(v1::Decode::Stub* stub, v1::GenerateRequest request, absl::BlockingCounter* done)
      : request_(std::move(request)), done_(done) {
    start_ = absl::Now();
    context_.set_deadline(absl::ToChronoTime(start_ + kDeadline));
    stub->async()->Generate(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (response_.has_token()) ++tokens_;
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    status_ = status;
    elapsed_ = absl::Now() - start_;
    done_->DecrementCount();
  }

  const grpc::Status& status() const { return status_; }
  absl::Duration elapsed() const { return elapsed_; }
  int tokens() const { return tokens_; }

 private:
  grpc::ClientContext context_;
  v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  absl::BlockingCounter* done_;
  absl::Time start_;
  absl::Duration elapsed_;
  grpc::Status status_;
  int tokens_ = 0;
};

TEST(OverloadTest, ThousandConcurrentCallsEndOkOrResourceExhaustedWithinBounds) {
  char dir[] = "/tmp/nanoserve_overload_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string model_dir = std::string(dir) + "/model";
  ASSERT_TRUE(SaveCheckpoint(model_dir, testing::TinyCheckpoint()).ok());
  ServiceStackOptions o;
  o.bin_dir = NANOSERVE_BIN_DIR;
  o.work_dir = dir;
  o.model.spec = model_dir;
  o.kv_store.page_size = 8;
  o.kv_store.pool_mb = 16;
  o.decode.max_batch = kMaxBatch;
  o.decode_flags = {absl::StrCat("--max_queue=", kMaxQueue), "--workers=8"};
  auto stack = ServiceStack::Start(o);
  ASSERT_TRUE(stack.ok()) << stack.status();
  auto decode = v1::Decode::NewStub(MakeChannel((*stack)->target(ServiceStack::kDecode), 8 << 20));

  const absl::Time start = absl::Now();
  absl::BlockingCounter done(kCalls);
  std::vector<std::unique_ptr<GenerateCall>> calls;
  for (int i = 0; i < kCalls; ++i) {
    if (i > 0 && i % (kCalls / kBursts) == 0) absl::SleepFor(kBurstGap);
    std::vector<int> prompt;
    for (int t = 0; t < 12 + i % 9; ++t) prompt.push_back((t * 31 + i * 7) % 512);
    calls.push_back(std::make_unique<GenerateCall>(decode.get(), GreedyRequest(prompt, 8), &done));
  }
  done.Wait();
  const absl::Duration wall = absl::Now() - start;

  std::map<grpc::StatusCode, int> codes;
  absl::Duration slowest;
  for (const auto& call : calls) {
    ++codes[call->status().error_code()];
    slowest = std::max(slowest, call->elapsed());
    if (call->status().ok()) EXPECT_EQ(call->tokens(), 8);
  }
  const int ok = codes[grpc::StatusCode::OK];
  const int exhausted = codes[grpc::StatusCode::RESOURCE_EXHAUSTED];
  std::fprintf(stderr,
               "overload: %d calls in %.2f s: %d OK, %d RESOURCE_EXHAUSTED, slowest %.2f s\n",
               kCalls, absl::ToDoubleSeconds(wall), ok, exhausted, absl::ToDoubleSeconds(slowest));
  EXPECT_EQ(ok + exhausted, kCalls) << "other codes: " << codes.size() - 2;
  EXPECT_GE(ok, kMaxBatch + kMaxQueue);  // at least the first burst's admitted ones
  EXPECT_GE(exhausted, kCalls / 2);      // the bound was reached, burst after burst
  EXPECT_LT(slowest, kDeadline);

  // Resident memory: the peak of each service over the whole run.
  for (ServiceStack::Which which :
       {ServiceStack::kKvStore, ServiceStack::kPrefill, ServiceStack::kDecode}) {
    const pid_t pid = (*stack)->process(which)->pid();
    const int64_t hwm = ProcStatusMib(pid, "VmHWM");
    std::fprintf(stderr, "overload: service %d VmHWM %lld MiB, VmRSS %lld MiB\n", which,
                 static_cast<long long>(hwm), static_cast<long long>(ProcStatusMib(pid, "VmRSS")));
    EXPECT_GT(hwm, 0);
    EXPECT_LT(hwm, kRssBoundMib) << "service " << which;
  }

  // Nothing stays pinned: every lease was released.
  KvStoreClientOptions s;
  s.target = (*stack)->target(ServiceStack::kKvStore);
  KvStoreClient store(s);
  v1::StatsResponse stats;
  const absl::Time end = absl::Now() + absl::Seconds(10);
  do {
    stats = store.Stats().value();
    if (stats.pages_pinned() == 0 && stats.active_leases() == 0) break;
    absl::SleepFor(absl::Milliseconds(50));
  } while (absl::Now() < end);
  EXPECT_EQ(stats.pages_pinned(), 0);
  EXPECT_EQ(stats.active_leases(), 0);

  // Still serving.
  auto after = StreamGenerate(*decode, GreedyRequest({1, 2, 3, 4, 5}, 4), absl::Seconds(30));
  EXPECT_TRUE(after.ok()) << after.status();
  decode.reset();
  EXPECT_TRUE((*stack)->Stop().ok());
  if (std::getenv("NANOSERVE_KEEP_TEST_DIR") == nullptr) {
    std::system(absl::StrCat("rm -rf ", dir).c_str());
  }
}

}  // namespace overload_test
}  // namespace nanoserve
