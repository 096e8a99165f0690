// Integration: `nanoserve load` against the real services (nanoserve-kv-store,
// nanoserve-prefill, nanoserve-decode with its HTTP API) on free loopback
// ports with a tiny saved checkpoint, over gRPC and over HTTP: every request
// comes back whole, and the table and the per-request CSV agree with what
// was asked (counts, lengths, TTFT within the request's time, the shared
// prefix found in the cache). Requests the server refuses and a target with
// nothing listening are counted as failed, and the run still exits 0. A
// sweep over two rates writes one sweep line per rate and the plot.
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/results.h"
#include "client/service_client.h"
#include "client/subprocess.h"
#include "engine/checkpoint.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace load_test {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The per-request CSV as one map per row, column name -> field.
std::vector<std::map<std::string, std::string>> ReadCsv(const std::string& path) {
  std::vector<std::map<std::string, std::string>> rows;
  std::vector<std::string> header;
  for (absl::string_view line : absl::StrSplit(ReadFile(path), '\n', absl::SkipEmpty())) {
    const std::vector<std::string> fields = SplitCsvLine(std::string(line));
    if (header.empty()) {
      header = fields;
      continue;
    }
    EXPECT_EQ(fields.size(), header.size()) << line;
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < fields.size() && i < header.size(); ++i) row[header[i]] = fields[i];
    rows.push_back(row);
  }
  return rows;
}

double Num(const std::map<std::string, std::string>& row, const std::string& column) {
  double value = -1;
  EXPECT_TRUE(absl::SimpleAtod(row.at(column), &value)) << column << "=" << row.at(column);
  return value;
}

struct LoadRunResult {
  int code = -1;
  std::string output;  // stdout and stderr
};

class LoadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir[] = "/tmp/nanoserve_load_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = new std::string(dir);
    const std::string model_dir = *dir_ + "/model";
    ASSERT_TRUE(SaveCheckpoint(model_dir, testing::TinyCheckpoint()).ok());
    ServiceStackOptions o;
    o.bin_dir = NANOSERVE_BIN_DIR;
    o.work_dir = *dir_;
    o.model.spec = model_dir;
    o.kv_store.page_size = 8;
    o.kv_store.pool_mb = 16;
    o.decode.max_batch = 8;
    o.decode_flags = {"--workers=16"};
    auto stack = ServiceStack::Start(o);
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
  }

  static void TearDownTestSuite() {
    if (stack_ != nullptr) {
      absl::Status stopped = stack_->Stop();
      EXPECT_TRUE(stopped.ok()) << stopped;
      delete stack_;
      stack_ = nullptr;
    }
    if (std::getenv("NANOSERVE_KEEP_TEST_DIR") == nullptr) {
      std::system(absl::StrCat("rm -rf ", *dir_).c_str());
    }
  }

  void SetUp() override { ASSERT_NE(stack_, nullptr); }

  // Runs `nanoserve load` with `flags`; a tiny model: ids below 512.
  static LoadRunResult Load(const std::vector<std::string>& flags) {
    static int runs = 0;
    const std::string log = absl::StrCat(*dir_, "/load", ++runs, ".log");
    std::vector<std::string> argv = {absl::StrCat(NANOSERVE_BIN_DIR, "/nanoserve"), "load",
                                     "--vocab_size=512"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    LoadRunResult result;
    auto child = Subprocess::Start(argv, log);
    if (!child.ok()) return result;
    auto code = (*child)->Wait(absl::Minutes(5));
    result.code = code.ok() ? *code : -1;
    result.output = ReadFile(log);
    return result;
  }

  static std::string GrpcTarget() { return stack_->target(ServiceStack::kDecode); }
  static std::string HttpTarget() { return absl::StrCat("127.0.0.1:", stack_->http_port()); }

  // Sequential requests, half of them sharing their first 8 tokens (one
  // page): every row ok with what it asked for, and each shared-prefix
  // request after the first finds the prefix cached.
  static void ExpectConsistentRun(const std::vector<std::string>& transport) {
    const std::string csv = absl::StrCat(*dir_, "/requests", transport.size(), ".csv");
    std::vector<std::string> flags = {
        "--requests=6",     "--concurrency=1",       "--prompt_len=9:24",
        "--output_len=3:8", "--shared_prefix_len=8", "--shared_prefix_share=0.5",
        "--seed=3",         "--slo_ttft_ms=600000",  "--csv=" + csv};
    flags.insert(flags.end(), transport.begin(), transport.end());
    const LoadRunResult run = Load(flags);
    ASSERT_EQ(run.code, 0) << run.output;
    EXPECT_THAT(run.output, HasSubstr("| requests ok / failed | 6 / 0 |"));
    EXPECT_THAT(run.output, HasSubstr("(6 of 6 ok)"));  // a generous SLO: every one is good
    const auto rows = ReadCsv(csv);
    ASSERT_EQ(rows.size(), 6u) << run.output;
    int64_t output_tokens = 0, shared = 0, shared_hits = 0;
    for (const auto& row : rows) {
      EXPECT_EQ(row.at("ok"), "1") << row.at("error");
      EXPECT_EQ(row.at("error"), "");
      EXPECT_EQ(Num(row, "output_tokens"), Num(row, "max_tokens"));
      EXPECT_GE(Num(row, "max_tokens"), 3);
      EXPECT_LE(Num(row, "max_tokens"), 8);
      EXPECT_GE(Num(row, "prompt_tokens"), 9);
      EXPECT_LE(Num(row, "prompt_tokens"), 24);
      EXPECT_GT(Num(row, "ttft_ms"), 0);
      EXPECT_LE(Num(row, "ttft_ms"), Num(row, "e2e_ms"));
      EXPECT_LE(Num(row, "itl_max_ms"), Num(row, "e2e_ms") - Num(row, "ttft_ms") + 1e-3);
      output_tokens += static_cast<int64_t>(Num(row, "output_tokens"));
      if (row.at("shared_prefix") == "1") {
        ++shared;
        shared_hits += Num(row, "cached_prompt_tokens") >= 8;
      } else {
        EXPECT_EQ(Num(row, "cached_prompt_tokens"), 0);  // its own salt: nothing from before
      }
    }
    EXPECT_EQ(shared, 3);
    EXPECT_EQ(shared_hits, 2);  // all but the first of them
    EXPECT_THAT(run.output, HasSubstr(absl::StrCat(" / ", output_tokens, " |")));
  }

  static std::string* dir_;
  static ServiceStack* stack_;
};

std::string* LoadTest::dir_ = nullptr;
ServiceStack* LoadTest::stack_ = nullptr;

TEST_F(LoadTest, GrpcRunIsWholeAndConsistent) { ExpectConsistentRun({"--target=" + GrpcTarget()}); }

TEST_F(LoadTest, HttpRunIsWholeAndConsistent) {
  ExpectConsistentRun({"--target=" + HttpTarget(), "--http"});
}

TEST_F(LoadTest, RefusedRequestsAreCountedNotFatal) {
  // Prompts of 100 tokens do not fit the tiny model's context of 96.
  for (const std::vector<std::string>& transport :
       {std::vector<std::string>{"--target=" + GrpcTarget()},
        std::vector<std::string>{"--target=" + HttpTarget(), "--http"}}) {
    const std::string csv = absl::StrCat(*dir_, "/refused", transport.size(), ".csv");
    std::vector<std::string> flags = {"--requests=3", "--prompt_len=100", "--output_len=4",
                                      "--csv=" + csv};
    flags.insert(flags.end(), transport.begin(), transport.end());
    const LoadRunResult run = Load(flags);
    EXPECT_EQ(run.code, 0) << run.output;
    EXPECT_THAT(run.output, HasSubstr("| requests ok / failed | 0 / 3 |"));
    EXPECT_THAT(run.output, HasSubstr("failed x3: INVALID_ARGUMENT"));
    const auto rows = ReadCsv(csv);
    ASSERT_EQ(rows.size(), 3u);
    for (const auto& row : rows) {
      EXPECT_EQ(row.at("ok"), "0");
      EXPECT_THAT(row.at("error"), HasSubstr("INVALID_ARGUMENT"));
    }
  }
}

TEST_F(LoadTest, NothingListeningFailsEveryRequestAndTheRunGoesOn) {
  // The store's port speaks gRPC but has no Decode service; a closed port
  // refuses the connection.
  const LoadRunResult wrong = Load({"--target=" + stack_->target(ServiceStack::kKvStore),
                                    "--requests=2", "--prompt_len=8", "--output_len=2"});
  EXPECT_EQ(wrong.code, 0) << wrong.output;
  EXPECT_THAT(wrong.output, HasSubstr("| requests ok / failed | 0 / 2 |"));
  EXPECT_THAT(wrong.output, HasSubstr("UNIMPLEMENTED"));
  const LoadRunResult closed = Load({"--target=127.0.0.1:1", "--requests=2", "--prompt_len=8",
                                     "--output_len=2", "--timeout_s=5"});
  EXPECT_EQ(closed.code, 0) << closed.output;
  EXPECT_THAT(closed.output, HasSubstr("| requests ok / failed | 0 / 2 |"));
}

// True if bench/report.py's run_gnuplot would find a gnuplot: $GNUPLOT, else
// gnuplot or gnuplot-nox on PATH.
bool HaveGnuplot() {
  const char* env = getenv("GNUPLOT");
  if (env != nullptr && *env != '\0') return access(env, X_OK) == 0;
  return system("command -v gnuplot >/dev/null 2>&1 || command -v gnuplot-nox >/dev/null 2>&1") ==
         0;
}

TEST_F(LoadTest, SweepWritesOneLinePerRateAndThePlot) {
  const std::string sweep = *dir_ + "/sweep.csv";
  const std::string png = *dir_ + "/sweep.png";
  const bool plot = HaveGnuplot();  // without one, check the sweep and skip the plot
  std::vector<std::string> args = {"--target=" + GrpcTarget(), "--requests=4",   "--rates=50,inf",
                                   "--concurrency=2",          "--prompt_len=8", "--output_len=3",
                                   "--sweep_csv=" + sweep};
  if (plot) args.push_back("--plot=" + png);
  const LoadRunResult run = Load(args);
  ASSERT_EQ(run.code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("| rate req/s | ok | failed |"));
  EXPECT_THAT(run.output, HasSubstr("| 50 | 4 | 0 |"));
  EXPECT_THAT(run.output, HasSubstr("| inf | 4 | 0 |"));
  const auto rows = ReadCsv(sweep);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].at("rate"), "50");
  EXPECT_EQ(rows[1].at("rate"), "inf");
  for (const auto& row : rows) {
    EXPECT_EQ(row.at("ok"), "4");
    EXPECT_EQ(row.at("concurrency"), "2");
    EXPECT_LE(Num(row, "ttft_p50_ms"), Num(row, "ttft_p99_ms"));
    EXPECT_GT(Num(row, "output_throughput"), 0);
  }
  if (!plot) {
    GTEST_SKIP() << "the sweep checked; the plot needs gnuplot ($GNUPLOT, or gnuplot or "
                    "gnuplot-nox on PATH), and there is none";
  }
  auto is_png = [](const std::string& path) {
    std::ifstream image(path, std::ios::binary);
    char magic[4] = {};
    image.read(magic, 4);
    return std::string(magic + 1, 3) == "PNG";
  };
  EXPECT_TRUE(is_png(png)) << run.output;
  // Two runs on one plot (say, the services over bytes and over CUDA IPC).
  const std::string both = *dir_ + "/both.png";
  const std::string command =
      absl::StrCat("python3 " NANOSERVE_SOURCE_DIR "/bench/load_plot.py", " --csv bytes=", sweep,
                   " --csv cuda_ipc=", sweep, " --png ", both, " 2>&1");
  EXPECT_EQ(system(command.c_str()), 0) << command;
  EXPECT_TRUE(is_png(both));
}

TEST_F(LoadTest, BadFlagsExitTwoBeforeSendingAnything) {
  EXPECT_EQ(Load({"--target=" + GrpcTarget(), "--prompt_len=8:4"}).code, 2);
  EXPECT_EQ(Load({"--target=" + GrpcTarget(), "--prompt_len=8", "--shared_prefix_len=9",
                  "--shared_prefix_share=1"})
                .code,
            2);
  EXPECT_EQ(Load({"--prompt_len=8"}).code, 2);  // no --target
}

}  // namespace load_test
}  // namespace nanoserve
