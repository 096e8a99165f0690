// Integration: the clients nanoserve did not write, against the real
// binaries (nanoserve-kv-store, nanoserve-prefill, nanoserve-decode with its
// OpenAI-compatible HTTP API) on free loopback ports with a tiny saved
// checkpoint: `curl -N` and the official `openai` npm package stream a
// completion and get the greedy tokens `nanoserve generate --target` gets
// over gRPC; so does the Python gRPC example (Debian's python3-grpcio); a
// client that hangs up mid-stream frees its slot and lease; every service
// lists itself through gRPC server reflection, and Decode.Generate is
// called from reflected descriptors alone. Under abuse (issue 22): abandoned
// whole completions are cancelled, 600 slow sockets do not delay /health or
// /metrics, and a second decode on the same ports fails to start. A test whose tool is missing
// (scripts/setup.sh installs them all) is skipped and says which.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/server_runner.h"
#include "client/service_client.h"
#include "client/subprocess.h"
#include "engine/checkpoint.h"
#include "kv_store/client/kv_store_client.h"
#include "tests/test_util/metrics.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace front_door_test {

using ::nanoserve::testing::MetricValue;
using nlohmann::json;

// Tokens below the tiny model's 512-word vocabulary: "a b c d e f g h" is
// one whole page (8 tokens), the rest a partial one.
constexpr char kPrompt[] = "a b c d e f g h The in of to and";
constexpr int kNewTokens = 12;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Single quotes for /bin/sh.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A connected socket to 127.0.0.1:port, or -1.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void SendAll(int fd, const std::string& data) {
  (void)!send(fd, data.data(), data.size(), MSG_NOSIGNAL);
}

// A GET on a connection of its own: the time until the whole response came,
// and whether it was `status`.
absl::Duration TimedGet(int port, const std::string& path, int status, bool* ok) {
  const absl::Time start = absl::Now();
  *ok = false;
  const int fd = Connect(port);
  if (fd < 0) return absl::InfiniteDuration();
  SendAll(fd, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  std::string out;
  char buf[4096];
  pollfd p{fd, POLLIN, 0};
  while (poll(&p, 1, 5000) > 0) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, n);
  }
  close(fd);
  *ok = absl::StartsWith(out, absl::StrCat("HTTP/1.1 ", status));
  return absl::Now() - start;
}

struct ToolRun {
  int code = -1;
  std::string out, err;
};

class FrontDoorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir[] = "/tmp/nanoserve_front_XXXXXX";
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
    o.decode_flags = {"--served_model_name=tiny", "--workers=16"};
    auto stack = ServiceStack::Start(o);
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
  }

  static void TearDownTestSuite() {
    if (stack_ != nullptr) {
      absl::Status stopped = stack_->Stop();  // SIGTERM: each must exit 0
      EXPECT_TRUE(stopped.ok()) << stopped;
      delete stack_;
      stack_ = nullptr;
    }
    if (std::getenv("NANOSERVE_KEEP_TEST_DIR") == nullptr) {
      std::system(absl::StrCat("rm -rf ", *dir_).c_str());
    }
  }

  void SetUp() override { ASSERT_NE(stack_, nullptr); }

  // Runs `command` with /bin/sh; its stdout and stderr.
  static ToolRun Run(const std::string& command, absl::Duration timeout = absl::Seconds(60)) {
    static int runs = 0;
    const std::string out = absl::StrCat(*dir_, "/tool", ++runs, ".out");
    const std::string err = absl::StrCat(*dir_, "/tool", runs, ".err");
    ToolRun run;
    auto child =
        Subprocess::Start({"/bin/sh", "-c", absl::StrCat("( ", command, " ) >", out, " 2>", err)});
    if (!child.ok()) return run;
    auto code = (*child)->Wait(timeout);
    run.code = code.ok() ? *code : -1;
    run.out = ReadFile(out);
    run.err = ReadFile(err);
    return run;
  }

  static bool Have(const std::string& check) { return Run(check + " >/dev/null 2>&1").code == 0; }

  // The reference: `nanoserve generate --target` over gRPC, greedy.
  static json GrpcReference() {
    ToolRun r = Run(absl::StrCat(
        NANOSERVE_BIN_DIR, "/nanoserve generate --target ", stack_->target(ServiceStack::kDecode),
        " --prompt ", Quote(kPrompt), " --max_new_tokens ", kNewTokens, " --ignore_eos --json"));
    EXPECT_EQ(r.code, 0) << r.err;
    return json::parse(r.out, nullptr, false);
  }

  static json CompletionBody(bool stream, int max_tokens) {
    return {{"model", "tiny"},          {"prompt", kPrompt},
            {"max_tokens", max_tokens}, {"temperature", 0},
            {"ignore_eos", true},       {"stream", stream},
            {"return_token_ids", true}, {"stream_options", {{"include_usage", true}}}};
  }

  // The "data:" events of an SSE stream ("[DONE]" as a string).
  static std::vector<json> Events(const std::string& sse) {
    std::vector<json> events;
    for (absl::string_view line : absl::StrSplit(sse, '\n')) {
      if (!absl::ConsumePrefix(&line, "data: ")) continue;
      events.push_back(line == "[DONE]" ? json("[DONE]") : json::parse(line, nullptr, false));
    }
    return events;
  }

  static std::string Metrics() {
    httplib::Client http("127.0.0.1", stack_->metrics_port(ServiceStack::kDecode));
    auto res = http.Get("/metrics");
    return res && res->status == 200 ? res->body : "";
  }

  static std::string* dir_;
  static ServiceStack* stack_;
};

std::string* FrontDoorTest::dir_ = nullptr;
ServiceStack* FrontDoorTest::stack_ = nullptr;

TEST_F(FrontDoorTest, CurlStreamsTheGrpcGreedyTokens) {
  if (!Have("command -v curl")) GTEST_SKIP() << "curl is not installed (scripts/setup.sh)";
  const json reference = GrpcReference();
  ASSERT_TRUE(reference.contains("output_ids")) << reference;
  ToolRun r = Run(absl::StrCat("curl -sSN --fail-with-body ", stack_->http_base_url(),
                               "/v1/completions -H 'Content-Type: application/json' -d ",
                               Quote(CompletionBody(true, kNewTokens).dump())));
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const std::vector<json> events = Events(r.out);
  ASSERT_GE(events.size(), 3u) << r.out;
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<int> ids;
  std::string text;
  std::string finish;
  json usage;
  for (const json& e : events) {
    if (!e.is_object()) continue;
    if (e.contains("usage") && !e["usage"].is_null()) usage = e["usage"];
    for (const json& c : e["choices"]) {
      for (int id : c["token_ids"]) ids.push_back(id);
      text += c["text"].get<std::string>();
      if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
    }
  }
  EXPECT_EQ(ids, reference["output_ids"].get<std::vector<int>>());
  EXPECT_EQ(text, reference["text"]);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(usage["prompt_tokens"], 13);
  EXPECT_EQ(usage["completion_tokens"], kNewTokens);
  // The gRPC call put the prompt's whole page in the store: reused here.
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 8);

  // Not streamed: the same, in one JSON object.
  ToolRun whole = Run(absl::StrCat("curl -sS ", stack_->http_base_url(),
                                   "/v1/completions -H 'Content-Type: application/json' -d ",
                                   Quote(CompletionBody(false, kNewTokens).dump())));
  const json w = json::parse(whole.out, nullptr, false);
  ASSERT_TRUE(w.contains("choices")) << whole.out << whole.err;
  EXPECT_EQ(w["choices"][0]["token_ids"], reference["output_ids"]);
  EXPECT_EQ(w["object"], "text_completion");
}

TEST_F(FrontDoorTest, OpenAiNpmClientStreamsTheGrpcGreedyTokens) {
  if (!Have("command -v node")) GTEST_SKIP() << "node is not installed (scripts/setup.sh)";
  const std::string example = absl::StrCat(NANOSERVE_SOURCE_DIR, "/client/examples/openai");
  if (access((example + "/node_modules/openai/package.json").c_str(), R_OK) != 0) {
    GTEST_SKIP() << "the openai npm package is not installed in " << example
                 << "/node_modules (scripts/setup.sh installs it)";
  }
  const json reference = GrpcReference();
  ToolRun r = Run(absl::StrCat("node ", example, "/stream.mjs --base_url ", stack_->http_base_url(),
                               "/v1 --model tiny --prompt ", Quote(kPrompt), " --max_tokens ",
                               kNewTokens, " --temperature 0 --ignore_eos --json"));
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const json out = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(out.contains("token_ids")) << r.out;
  EXPECT_EQ(out["token_ids"], reference["output_ids"]);
  EXPECT_EQ(out["text"], reference["text"]);
  EXPECT_EQ(out["finish_reason"], "length");
  EXPECT_GE(out["chunks"].get<int>(), kNewTokens);  // streamed, not one response
  EXPECT_EQ(out["usage"]["completion_tokens"], kNewTokens);
  EXPECT_EQ(out["usage"]["prompt_tokens_details"]["cached_tokens"], 8);

  // The SDK raises OpenAI's errors: an unknown model is a 404 NotFoundError.
  ToolRun bad = Run(absl::StrCat("node ", example, "/stream.mjs --base_url ",
                                 stack_->http_base_url(), "/v1 --model gpt-4 --prompt x"));
  EXPECT_NE(bad.code, 0);
  EXPECT_TRUE(absl::StrContains(bad.err, "404")) << bad.err;
}

TEST_F(FrontDoorTest, PythonGrpcExampleGetsTheSameTokens) {
  if (!Have("/usr/bin/python3 -c 'import grpc, grpc_tools'")) {
    GTEST_SKIP() << "Debian's python3-grpcio and python3-grpc-tools are not installed "
                    "(scripts/setup.sh)";
  }
  const json reference = GrpcReference();
  ToolRun r = Run(absl::StrCat("/usr/bin/python3 ", NANOSERVE_SOURCE_DIR,
                               "/client/examples/python/generate.py --target ",
                               stack_->target(ServiceStack::kDecode), " --prompt ", Quote(kPrompt),
                               " --max_new_tokens ", kNewTokens, " --ignore_eos --json"));
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const json out = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(out.contains("output_ids")) << r.out;
  EXPECT_EQ(out["output_ids"], reference["output_ids"]);
  EXPECT_EQ(out["text"], reference["text"]);
}

// curl hangs up after the first events (head exits, curl's next write
// fails): decode cancels the call, the slot and the lease are freed.
TEST_F(FrontDoorTest, ClientDisconnectFreesTheSlotAndTheLease) {
  if (!Have("command -v curl")) GTEST_SKIP() << "curl is not installed (scripts/setup.sh)";
  const std::string before = Metrics();
  const double cancelled_before =
      MetricValue(before, "nanoserve_decode_requests_total{code=\"CANCELLED\"}");
  json body = CompletionBody(true, 80);  // 13 + 80 tokens: nearly the 96-token context
  body["prompt"] = "h g f e d c b a The in of to and";  // not cached: prefill, lease, fetch
  ToolRun r = Run(absl::StrCat("curl -sSN ", stack_->http_base_url(),
                               "/v1/completions -H 'Content-Type: application/json' -d ",
                               Quote(body.dump()), " | head -n 4"));
  EXPECT_EQ(Events(r.out).size(), 2u) << r.out;  // two events, then the hang-up
  KvStoreClientOptions store_options;
  store_options.target = stack_->target(ServiceStack::kKvStore);
  KvStoreClient store(store_options);
  std::string page;
  v1::StatsResponse stats;
  const absl::Time end = absl::Now() + absl::Seconds(20);
  do {
    absl::SleepFor(absl::Milliseconds(20));
    page = Metrics();
    stats = store.Stats().value();
  } while ((MetricValue(page, "nanoserve_decode_active_sequences") != 0 ||
            MetricValue(page, "nanoserve_decode_http_requests_in_flight") != 0 ||
            stats.pages_pinned() != 0 || stats.active_leases() != 0) &&
           absl::Now() < end);
  EXPECT_EQ(MetricValue(page, "nanoserve_decode_active_sequences"), 0);
  EXPECT_EQ(MetricValue(page, "nanoserve_decode_http_requests_in_flight"), 0);
  EXPECT_EQ(stats.pages_pinned(), 0);
  EXPECT_EQ(stats.active_leases(), 0);
  // Cancelled, not run to its 80 tokens.
  EXPECT_EQ(MetricValue(page, "nanoserve_decode_requests_total{code=\"CANCELLED\"}"),
            std::max(cancelled_before, 0.0) + 1)
      << page;
}

// The 17 abandoned whole completions (n = 16) that held all of
// admission for minutes: here 4 requests x n = 4, whose clients hang up
// while their calls run. Each call is cancelled (not run to its 80 tokens),
// and nothing stays in flight.
TEST_F(FrontDoorTest, AbandonedWholeCompletionsAreCancelled) {
  const std::string before = Metrics();
  const double cancelled_before =
      std::max(0.0, MetricValue(before, "nanoserve_decode_requests_total{code=\"CANCELLED\"}"));
  json body = CompletionBody(false, 80);
  body["prompt"] = "h g f e d c b a The of in";
  body["n"] = 4;
  body.erase("stream_options");
  const std::string text = body.dump();
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) {
    const int fd = Connect(stack_->http_port());
    ASSERT_GE(fd, 0);
    SendAll(fd, absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: application/json\r\nContent-Length: ",
                             text.size(), "\r\n\r\n", text));
    fds.push_back(fd);
  }
  absl::Time end = absl::Now() + absl::Seconds(20);
  while (MetricValue(Metrics(), "nanoserve_decode_http_requests_in_flight") < 4 &&
         absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  for (int fd : fds) close(fd);
  const absl::Time closed = absl::Now();
  std::string page;
  end = absl::Now() + absl::Seconds(20);
  do {
    absl::SleepFor(absl::Milliseconds(10));
    page = Metrics();
  } while ((MetricValue(page, "nanoserve_decode_active_sequences") != 0 ||
            MetricValue(page, "nanoserve_decode_http_requests_in_flight") != 0) &&
           absl::Now() < end);
  std::fprintf(stderr, "abandoned: all calls ended %.0f ms after the hang-ups\n",
               absl::ToDoubleMilliseconds(absl::Now() - closed));
  EXPECT_EQ(MetricValue(page, "nanoserve_decode_http_requests_in_flight"), 0);
  EXPECT_EQ(MetricValue(page, "nanoserve_decode_active_sequences"), 0);
  EXPECT_EQ(MetricValue(page, "nanoserve_decode_requests_total{code=\"CANCELLED\"}"),
            cancelled_before + 16)
      << page;
}

// The 140 sockets trickling headers, which stalled /health and
// completions (a thread per connection), and 100 slow sockets on /metrics:
// 500 on the API port and 100 on the metrics port, a byte each between
// probes; /health and /metrics answer within 100 ms every time.
TEST_F(FrontDoorTest, HealthAnswersWhileFiveHundredSlowSocketsAreAttached) {
  const int metrics_port = stack_->metrics_port(ServiceStack::kDecode);
  std::vector<int> slow;
  for (int i = 0; i < 600; ++i) {
    const int fd = Connect(i < 500 ? stack_->http_port() : metrics_port);
    ASSERT_GE(fd, 0) << i;
    SendAll(fd, i < 500 ? "GET /health HTTP/1.1\r\nX-Slow: " : "GET /metrics HTTP/1.1\r\nX: ");
    slow.push_back(fd);
  }
  // Within 100 ms; the shared test machine may pause a process now and then,
  // so 8 of 10 rounds each (before, none was answered within seconds).
  absl::Duration slowest;
  int fast_health = 0, fast_metrics = 0;
  for (int round = 0; round < 10; ++round) {
    for (int fd : slow) SendAll(fd, "a");
    bool ok = false;
    const absl::Duration health = TimedGet(stack_->http_port(), "/health", 200, &ok);
    EXPECT_TRUE(ok) << "round " << round;
    const absl::Duration metrics = TimedGet(metrics_port, "/metrics", 200, &ok);
    EXPECT_TRUE(ok) << "round " << round;
    fast_health += health < absl::Milliseconds(100) ? 1 : 0;
    fast_metrics += metrics < absl::Milliseconds(100) ? 1 : 0;
    slowest = std::max({slowest, health, metrics});
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::fprintf(stderr,
               "600 slow sockets: /health within 100 ms %d of 10, /metrics %d of 10; "
               "slowest %.1f ms\n",
               fast_health, fast_metrics, absl::ToDoubleMilliseconds(slowest));
  EXPECT_GE(fast_health, 8);
  EXPECT_GE(fast_metrics, 8);
  EXPECT_LT(slowest, absl::Seconds(2));
  for (int fd : slow) close(fd);
}

// The second nanoserve-decode on ports in use, which started and took
// a share of the calls (SO_REUSEPORT): it fails to start and names the port,
// whether its gRPC or its HTTP port is the taken one.
TEST_F(FrontDoorTest, ASecondDecodeOnTheSamePortsFailsToStart) {
  const std::string model_dir = *dir_ + "/model";
  struct Case {
    std::string grpc, http, taken;
  } cases[] = {
      {stack_->target(ServiceStack::kDecode), "127.0.0.1:0", stack_->target(ServiceStack::kDecode)},
      {"127.0.0.1:0", absl::StrCat("127.0.0.1:", stack_->http_port()),
       absl::StrCat("127.0.0.1:", stack_->http_port())},
  };
  for (const Case& c : cases) {
    ToolRun r =
        Run(absl::StrCat(NANOSERVE_BIN_DIR, "/nanoserve-decode --model ", model_dir,
                         " --served_model_name tiny --kv_store= --prefill= --listen ", c.grpc,
                         " --http_listen ", c.http, " --metrics_listen 127.0.0.1:0"),
            absl::Seconds(60));
    EXPECT_NE(r.code, 0) << r.err;
    EXPECT_NE(r.code, -1) << "still running: " << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, c.taken)) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, "in use")) << r.err;
  }
  // The first serves on.
  bool ok = false;
  TimedGet(stack_->http_port(), "/health", 200, &ok);
  EXPECT_TRUE(ok);
}

TEST_F(FrontDoorTest, ReflectionListsAndCallsEveryService) {
  if (!Have("/usr/bin/python3 -c 'import grpc, grpc_tools'") ||
      access("/usr/share/grpc-proto/grpc/reflection/v1alpha/reflection.proto", R_OK) != 0) {
    GTEST_SKIP() << "Debian's python3-grpcio, python3-grpc-tools or grpc-proto is not "
                    "installed (scripts/setup.sh)";
  }
  const std::string tool =
      absl::StrCat("/usr/bin/python3 ", NANOSERVE_SOURCE_DIR, "/client/examples/python/reflect.py");
  const struct {
    ServiceStack::Which which;
    const char* service;
    const char* method;
  } expected[] = {
      {ServiceStack::kKvStore, "nanoserve.v1.KvStore", "Fetch(nanoserve.v1.FetchRequest)"},
      {ServiceStack::kPrefill, "nanoserve.v1.Prefill", "Prefill(nanoserve.v1.PrefillRequest)"},
      {ServiceStack::kDecode, "nanoserve.v1.Decode", "Generate(nanoserve.v1.GenerateRequest)"},
  };
  for (const auto& e : expected) {
    ToolRun r = Run(absl::StrCat(tool, " --target ", stack_->target(e.which)));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat(e.service, "\n"))) << r.out;
    EXPECT_TRUE(absl::StrContains(r.out, e.method)) << r.out;
    EXPECT_TRUE(absl::StrContains(r.out, "grpc.health.v1.Health\n")) << r.out;
    EXPECT_TRUE(absl::StrContains(r.out, "grpc.reflection.v1alpha.ServerReflection\n")) << r.out;
  }
  // A call built from reflected descriptors: the offline greedy tokens.
  ToolRun call = Run(absl::StrCat(tool, " --target ", stack_->target(ServiceStack::kDecode),
                                  " --generate_prompt_ids 5,6,7 --max_new_tokens 6"));
  ASSERT_EQ(call.code, 0) << call.err;
  const json out = json::parse(call.out, nullptr, false);
  ASSERT_TRUE(out.contains("output_ids")) << call.out;
  auto grpc = StreamGenerate(
      *v1::Decode::NewStub(MakeChannel(stack_->target(ServiceStack::kDecode), 8 << 20)),
      GreedyRequest({5, 6, 7}, 6), absl::Seconds(60));
  ASSERT_TRUE(grpc.ok()) << grpc.status();
  EXPECT_EQ(out["output_ids"].get<std::vector<int>>(), grpc->output_ids);
}

// The command line is a table of commands (cli/command_table.h): --help
// lists each, an unknown one is refused (exit 2) naming them all, and the
// commands read their own flags, spelled with dashes too.
TEST_F(FrontDoorTest, TheCommandLineRunsItsTableOfCommands) {
  const std::string nanoserve = absl::StrCat(NANOSERVE_BIN_DIR, "/nanoserve");
  const ToolRun unknown = Run(nanoserve + " frobnicate");
  EXPECT_EQ(unknown.code, 2);
  const ToolRun help = Run(nanoserve + " --help");
  for (const char* name : {"tokenize", "detokenize", "generate", "bench", "export-hf", "stats",
                           "health", "serve", "bench-services", "bench-decode", "load"}) {
    EXPECT_TRUE(absl::StrContains(unknown.err, name)) << name << ": " << unknown.err;
    EXPECT_TRUE(absl::StrContains(help.out + help.err, absl::StrCat("  ", name, " "))) << name;
  }
  const ToolRun tokenized = Run(nanoserve + " tokenize --text 'Hello world'");
  EXPECT_EQ(tokenized.code, 0) << tokenized.err;
  EXPECT_EQ(tokenized.out, "[15496,995]\n");
  const ToolRun detokenized = Run(nanoserve + " detokenize --ids 15496,995");
  EXPECT_EQ(detokenized.code, 0) << detokenized.err;
  EXPECT_EQ(detokenized.out, "Hello world\n");
  const ToolRun health = Run(absl::StrCat(
      nanoserve, " health --target ", stack_->target(ServiceStack::kDecode), " --timeout-s 30"));
  EXPECT_EQ(health.code, 0) << health.err;
  const ToolRun stats =
      Run(absl::StrCat(nanoserve, " stats --target ", stack_->target(ServiceStack::kKvStore)));
  EXPECT_EQ(stats.code, 0) << stats.err;
  EXPECT_TRUE(absl::StrContains(stats.out, "\"pages_total\"")) << stats.out;
}

}  // namespace front_door_test
}  // namespace nanoserve
