// The OpenAI-compatible HTTP API in this process: a DecodeStage over a tiny
// model (no prefill service, no store) behind an OpenAiServer on a free
// loopback port, driven with cpp-httplib's client. Errors get OpenAI's shape
// and their HTTP codes, including the stage's own validation for streamed
// requests; a streaming client that goes away frees its slot; a client at
// its share of admission gets 429 while one from another address is served.
#include "decode_service/openai_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "tests/test_util/gated_prefiller.h"
#include "tests/test_util/metrics.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace openai_server_test {

using nlohmann::json;

class OpenAiServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(BatchSchedulerOptions{}); }

  void StartServer(const BatchSchedulerOptions& scheduler_options, const std::string& api_key = "",
                   Prefiller* prefill = nullptr,
                   const DecodeStageOptions& stage_options = DecodeStageOptions()) {
    server_.reset();
    stage_.reset();
    scheduler_ = BatchScheduler::Create(model_.get(), scheduler_options).value();
    metrics_ = std::make_unique<MetricsRegistry>();  // gauges read the new scheduler
    stage_ = std::make_unique<DecodeStage>(tokenizer_.get(), scheduler_.get(), prefill, nullptr,
                                           &workers_, stage_options, metrics_.get());
    OpenAiServerOptions o;
    o.listen = "127.0.0.1:0";
    o.model_id = "tiny";
    o.http.max_body_bytes = 4096;
    o.api_key = api_key;
    server_ = std::make_unique<OpenAiServer>(stage_.get(), o, metrics_.get());
    auto port = server_->Start();
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = *port;
  }

  void TearDown() override {
    prefill_.Open();
    if (server_ != nullptr) server_->Stop(absl::Now() + absl::Seconds(5));
  }

  // POSTs a completion from `from`, the client's own loopback address
  // (127.0.0.0/8 is all loopback: each address is another caller).
  httplib::Result Post(const json& body, const httplib::Headers& headers = {},
                       const std::string& from = "") {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(60, 0);
    if (!from.empty()) {
      client.set_socket_options([from](int fd) {
        sockaddr_in local{};
        local.sin_family = AF_INET;
        local.sin_port = 0;
        ASSERT_EQ(inet_pton(AF_INET, from.c_str(), &local.sin_addr), 1);
        ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)), 0)
            << "bind " << from;
      });
    }
    return client.Post("/v1/completions", headers, body.dump(), "application/json");
  }

  // The JSON of every "data:" event of a streamed response, and the
  // "[DONE]" marker as the string "[DONE]".
  static std::vector<json> Events(const std::string& body) {
    std::vector<json> events;
    for (absl::string_view line : absl::StrSplit(body, '\n')) {
      if (!absl::ConsumePrefix(&line, "data: ")) continue;
      events.push_back(line == "[DONE]" ? json("[DONE]") : json::parse(line));
    }
    return events;
  }

  static json Greedy(std::vector<int> prompt, int max_tokens) {
    return {{"model", "tiny"},  {"prompt", prompt},   {"max_tokens", max_tokens},
            {"temperature", 0}, {"ignore_eos", true}, {"return_token_ids", true}};
  }

  std::unique_ptr<Gpt2Model> model_ = testing::TinyModel();
  std::unique_ptr<Gpt2Tokenizer> tokenizer_ = Gpt2Tokenizer::LoadDefault().value();
  WorkerPool workers_{8};
  testing::GatedPrefiller prefill_;  // opened before the stage goes
  std::unique_ptr<BatchScheduler> scheduler_;
  std::unique_ptr<MetricsRegistry> metrics_;
  std::unique_ptr<DecodeStage> stage_;
  std::unique_ptr<OpenAiServer> server_;
  int port_ = 0;
};

TEST_F(OpenAiServerTest, WholeAndStreamedResponsesCarryTheSameGreedyTokens) {
  auto whole = Post(Greedy({1, 2, 3}, 8));
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const json w = json::parse(whole->body);
  EXPECT_EQ(w["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(w["usage"]["completion_tokens"], 8);
  EXPECT_EQ(w["choices"][0]["finish_reason"], "length");
  const std::vector<int> ids = w["choices"][0]["token_ids"];
  EXPECT_EQ(ids.size(), 8u);

  json body = Greedy({1, 2, 3}, 8);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto streamed = Post(body);
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200) << streamed->body;
  EXPECT_EQ(streamed->get_header_value("Content-Type"), "text/event-stream");
  const std::vector<json> events = Events(streamed->body);
  ASSERT_EQ(events.size(), 8 + 1 + 1 + 1u);  // tokens, finish, usage, [DONE]
  std::vector<int> streamed_ids;
  std::string text;
  for (int i = 0; i < 9; ++i) {
    for (int id : events[i]["choices"][0]["token_ids"]) streamed_ids.push_back(id);
    text += events[i]["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(streamed_ids, ids);
  EXPECT_EQ(text, w["choices"][0]["text"]);
  EXPECT_EQ(events[8]["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(events[9]["choices"].empty());
  EXPECT_EQ(events[9]["usage"]["completion_tokens"], 8);
  EXPECT_EQ(events[10], "[DONE]");
}

TEST_F(OpenAiServerTest, NChoicesAndStopStrings) {
  json body = Greedy({4, 5}, 6);
  body["n"] = 3;
  auto three = Post(body);
  ASSERT_TRUE(three);
  ASSERT_EQ(three->status, 200) << three->body;
  const json t = json::parse(three->body);
  ASSERT_EQ(t["choices"].size(), 3u);
  EXPECT_EQ(t["choices"][2]["index"], 2);
  EXPECT_EQ(t["choices"][0]["text"], t["choices"][2]["text"]);  // greedy: the same
  EXPECT_EQ(t["usage"]["completion_tokens"], 18);

  // Stop at a piece of the greedy text: the text ends before it.
  auto plain = Post(Greedy({4, 5}, 30));
  ASSERT_TRUE(plain);
  const std::string full = json::parse(plain->body)["choices"][0]["text"];
  ASSERT_GE(full.size(), 6u);
  // Two ASCII bytes from the second half (not half a UTF-8 character).
  size_t at = full.size() / 2;
  while (at + 1 < full.size() && (full[at] & 0x80 || full[at + 1] & 0x80)) ++at;
  ASSERT_LT(at + 1, full.size()) << full;
  const std::string stop = full.substr(at, 2);
  json stopped = Greedy({4, 5}, 30);
  stopped["stop"] = stop;
  auto cut = Post(stopped);
  ASSERT_TRUE(cut);
  ASSERT_EQ(cut->status, 200) << cut->body;
  const json c = json::parse(cut->body);
  EXPECT_EQ(c["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  EXPECT_LT(c["usage"]["completion_tokens"].get<int>(), 30);
}

TEST_F(OpenAiServerTest, ErrorsHaveOpenAisShapeAndCodes) {
  auto expect = [&](const httplib::Result& res, int status) {
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, status) << res->body;
    const json e = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(e.contains("error")) << res->body;
    EXPECT_TRUE(e["error"]["message"].is_string());
  };
  httplib::Client client("127.0.0.1", port_);
  expect(client.Post("/v1/completions", "{oops", "application/json"), 400);
  expect(Post({{"model", "tiny"}, {"prompt", "x"}, {"logprobs", 3}}), 400);
  expect(Post({{"model", "gpt-4"}, {"prompt", "x"}}), 404);
  // The stage's own checks, whole and streamed: an unknown token id,
  // max_tokens 0, a prompt over the context, a bad top_p, five stop strings.
  for (bool stream : {false, true}) {
    for (json body : {Greedy({1, 9999}, 4), Greedy({1}, 0), Greedy(std::vector<int>(90, 1), 10)}) {
      body["stream"] = stream;
      expect(Post(body), 400);
    }
    json top_p = Greedy({1}, 2);
    top_p["top_p"] = 1.5;
    top_p["stream"] = stream;
    expect(Post(top_p), 400);
    json stops = Greedy({1}, 2);
    stops["stop"] = {"a", "b", "c", "d", "e"};
    stops["stream"] = stream;
    expect(Post(stops), 400);
  }
  expect(client.Post("/v1/completions", std::string(5000, ' '), "application/json"), 413);
  expect(client.Get("/v1/chat/nothing"), 404);
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "tiny");
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(scheduler_->active(), 0);
}

// A full decode (one slot, no queue) refuses with 429, like gRPC's
// RESOURCE_EXHAUSTED; a streaming client that leaves frees the slot.
TEST_F(OpenAiServerTest, FullIs429AndADisconnectFreesTheSlot) {
  BatchSchedulerOptions one;
  one.max_batch = 1;
  one.max_queue = 0;
  StartServer(one);
  json body = Greedy({1, 2, 3}, 90);
  body["stream"] = true;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  int chunks = 0;
  int refused_status = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
    if (++chunks == 2) {  // while the stream holds the slot
      httplib::Result refused = Post(Greedy({1}, 2));
      refused_status = refused ? refused->status : -1;
    }
    return chunks < 3;  // then hang up
  };
  httplib::Client client("127.0.0.1", port_);
  client.send(req);
  EXPECT_EQ(refused_status, 429);
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while ((scheduler_->active() > 0 ||
          !absl::StrContains(metrics_->Render(), "code=\"CANCELLED\"} 1")) &&
         absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(scheduler_->active(), 0);
  EXPECT_TRUE(absl::StrContains(metrics_->Render(),
                                "nanoserve_decode_requests_total{code=\"CANCELLED\"} 1"))
      << metrics_->Render();
  auto after = Post(Greedy({1}, 2));
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200) << after->body;
}

TEST_F(OpenAiServerTest, DrainingRefusesNewRequests) {
  server_->Drain();
  auto refused = Post(Greedy({1}, 2));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  httplib::Client client("127.0.0.1", port_);
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
}

TEST_F(OpenAiServerTest, AnApiKeyGuardsTheApiButNotHealth) {
  StartServer(BatchSchedulerOptions{}, "s3cret-key");
  for (const httplib::Headers& wrong :
       {httplib::Headers{}, httplib::Headers{{"Authorization", "Bearer s3cret-kez"}},
        httplib::Headers{{"Authorization", "Bearer s3cret-key-longer"}},
        httplib::Headers{{"Authorization", "s3cret-key"}}}) {
    auto refused = Post(Greedy({1}, 2), wrong);
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 401) << refused->body;
    EXPECT_EQ(json::parse(refused->body)["error"]["code"], "invalid_api_key");
    EXPECT_EQ(refused->get_header_value("WWW-Authenticate"), "Bearer");
  }
  httplib::Client client("127.0.0.1", port_);
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 401);
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  auto served = Post(Greedy({1}, 2), {{"Authorization", "Bearer s3cret-key"}});
  ASSERT_TRUE(served);
  EXPECT_EQ(served->status, 200) << served->body;
  models = client.Get("/v1/models", {{"Authorization", "Bearer s3cret-key"}});
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  EXPECT_NE(metrics_->Render().find("code=\"401\""), std::string::npos);
}

TEST(HttpGuardTest, BeyondLoopbackNeedsAKeyOrAnExplicitAllowance) {
  OpenAiServerOptions o;
  for (const char* loopback : {"127.0.0.1:8000", "127.8.9.1:0", "localhost:8000", "[::1]:8000"}) {
    o.listen = loopback;
    EXPECT_TRUE(CheckHttpGuard(o).ok()) << loopback;
  }
  for (const char* open : {"0.0.0.0:8000", "[::]:8000", "10.1.2.3:8000", "example.com:80",
                           "127.0.0.1.evil.example:80", "128.0.0.1:8000"}) {
    o.listen = open;
    const absl::Status refused = CheckHttpGuard(o);
    EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << open;
    EXPECT_NE(refused.message().find("--api_key"), absl::string_view::npos);
    OpenAiServerOptions keyed = o;
    keyed.api_key = "k";
    EXPECT_TRUE(CheckHttpGuard(keyed).ok()) << open;
    OpenAiServerOptions allowed = o;
    allowed.allow_insecure = true;
    EXPECT_TRUE(CheckHttpGuard(allowed).ok()) << open;
  }
}

TEST_F(OpenAiServerTest, StartRefusesAnUnguardedApiBeyondLoopback) {
  OpenAiServerOptions o;
  o.listen = "0.0.0.0:0";
  o.model_id = "tiny";
  OpenAiServer open(stage_.get(), o, nullptr);
  absl::StatusOr<int> port = open.Start();
  EXPECT_EQ(port.status().code(), absl::StatusCode::kFailedPrecondition);
}

// Admission is shared between HTTP clients by address: one at its share of
// --max_tokens_in_flight_per_caller gets 429 naming it, the bound and the
// flag, while a client from another address is served.
TEST_F(OpenAiServerTest, AClientAtItsShareGets429WhileAnotherIsServed) {
  DecodeStageOptions shares;
  shares.max_tokens_in_flight = 300;
  shares.max_tokens_in_flight_per_caller = 100;  // a call of 3 + 60 is 63
  StartServer(BatchSchedulerOptions{}, "", &prefill_, shares);
  // Each request's status and body (-1: no response).
  auto post = [&](int* status, std::string* body, const std::string& from) {
    httplib::Result r = Post(Greedy({1, 2, 3}, 60), {}, from);
    *status = r ? r->status : -1;
    *body = r ? r->body : httplib::to_string(r.error());
  };
  int held_status = 0, other_status = 0;
  std::string held_body, other_body;
  std::thread first([&] { post(&held_status, &held_body, ""); });
  ASSERT_TRUE(prefill_.AwaitEntered(1));
  httplib::Result refused = Post(Greedy({1, 2, 3}, 60));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 429) << refused->body;
  const std::string message = json::parse(refused->body)["error"]["message"];
  for (const std::string& part :
       {"caller 'ipv4:127.0.0.1'", "100", "--max_tokens_in_flight_per_caller"}) {
    EXPECT_NE(message.find(part), std::string::npos) << part << ": " << message;
  }
  std::thread second([&] { post(&other_status, &other_body, "127.0.0.2"); });
  EXPECT_TRUE(prefill_.AwaitEntered(2)) << "the client from 127.0.0.2 was not admitted";
  EXPECT_EQ(testing::MetricValue(metrics_->Render(), "nanoserve_decode_callers_in_flight"), 2);
  prefill_.Open();
  first.join();
  second.join();
  EXPECT_EQ(held_status, 200) << held_body;
  EXPECT_EQ(other_status, 200) << other_body;
  auto again = Post(Greedy({1, 2, 3}, 60));  // the share came back
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200) << again->body;
  EXPECT_EQ(testing::MetricValue(metrics_->Render(), "nanoserve_decode_tokens_in_flight"), 0);
}

}  // namespace openai_server_test
}  // namespace nanoserve
