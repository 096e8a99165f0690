// The OpenAI completions mapping: which bodies are refused for their shape
// (the values are the stage's to check), how prompts x n become choices,
// and the JSON written back.
#include "decode_service/openai_api.h"

#include <gtest/gtest.h>

#include <string>

namespace nanoserve {
namespace openai_api_test {

using nlohmann::json;

absl::StatusOr<CompletionRequest> Parse(const json& body, int64_t max_choices = 16) {
  return ParseCompletionRequest(body.dump(), max_choices, /*random_seed=*/77);
}

TEST(OpenAiApiTest, DefaultsAreOpenAisAndASeedIsDrawn) {
  auto r = Parse({{"model", "m"}, {"prompt", "Hello"}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->choices.size(), 1u);
  const GenerateParams& p = r->choices[0];
  EXPECT_EQ(p.prompt, "Hello");
  EXPECT_EQ(p.max_new_tokens, 16);
  EXPECT_EQ(p.sampling.temperature, 1.0);
  EXPECT_EQ(p.sampling.top_p, 1.0);
  EXPECT_EQ(p.sampling.seed, 77u);
  EXPECT_TRUE(p.stop_at_end_of_text);
  EXPECT_TRUE(p.stop.empty());
  EXPECT_FALSE(r->stream);
}

TEST(OpenAiApiTest, FieldsMapOntoTheStagesParams) {
  auto r = Parse({{"model", "m"},
                  {"prompt", {5, 6, 7}},
                  {"max_tokens", 9},
                  {"temperature", 0},
                  {"top_p", 0.5},
                  {"top_k", 3},
                  {"seed", 11},
                  {"stop", "\n"},
                  {"ignore_eos", true},
                  {"stream", true},
                  {"stream_options", {{"include_usage", true}}},
                  {"return_token_ids", true},
                  {"cache_salt", "tenant-1"},
                  {"user", "someone"},
                  {"logprobs", nullptr},
                  {"echo", false}});
  ASSERT_TRUE(r.ok()) << r.status();
  const GenerateParams& p = r->choices[0];
  EXPECT_EQ(p.prompt_ids, (std::vector<int>{5, 6, 7}));
  EXPECT_EQ(p.max_new_tokens, 9);
  EXPECT_EQ(p.sampling.temperature, 0);
  EXPECT_EQ(p.sampling.top_p, 0.5);
  EXPECT_EQ(p.sampling.top_k, 3);
  EXPECT_EQ(p.sampling.seed, 11u);
  EXPECT_EQ(p.stop, (std::vector<std::string>{"\n"}));
  EXPECT_FALSE(p.stop_at_end_of_text);
  EXPECT_EQ(p.cache_salt, "tenant-1");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_TRUE(r->return_token_ids);
}

TEST(OpenAiApiTest, PromptsTimesNAreTheChoicesWithTheirOwnSeeds) {
  auto r = Parse({{"model", "m"}, {"prompt", {"a", "b"}}, {"n", 3}, {"seed", 100}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->choices.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(r->choices[i].prompt, i < 3 ? "a" : "b") << i;
    EXPECT_EQ(r->choices[i].sampling.seed, 100u + i % 3) << i;
  }
  auto ids = Parse({{"model", "m"}, {"prompt", {{1, 2}, {3}}}});
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->choices.size(), 2u);
  EXPECT_EQ(ids->choices[1].prompt_ids, std::vector<int>{3});
}

TEST(OpenAiApiTest, BadShapesAreInvalidArgument) {
  const json bad[] = {
      {{"prompt", "x"}},                                       // no model
      {{"model", "m"}},                                        // no prompt
      {{"model", "m"}, {"prompt", 5}},                         // not a prompt
      {{"model", "m"}, {"prompt", json::array()}},             // empty
      {{"model", "m"}, {"prompt", {1, "a"}}},                  // mixed
      {{"model", "m"}, {"prompt", {1, 5000000000LL}}},         // not an int
      {{"model", "m"}, {"prompt", "x"}, {"max_tokens", 1.5}},  // not an integer
      {{"model", "m"}, {"prompt", "x"}, {"temperature", "hot"}},
      {{"model", "m"}, {"prompt", "x"}, {"stop", {1}}},
      {{"model", "m"}, {"prompt", "x"}, {"stream", "yes"}},
      {{"model", "m"}, {"prompt", "x"}, {"cache_salt", 7}},
      {{"model", "m"}, {"prompt", "x"}, {"n", 0}},
      {{"model", "m"}, {"prompt", "x"}, {"n", 17}},             // over max_choices
      {{"model", "m"}, {"prompt", {"a", "b", "c"}}, {"n", 6}},  // 18 choices
      {{"model", "m"}, {"prompt", "x"}, {"logprobs", 2}},       // not supported
      {{"model", "m"}, {"prompt", "x"}, {"echo", true}},
      {{"model", "m"}, {"prompt", "x"}, {"best_of", 2}},
      {{"model", "m"}, {"prompt", "x"}, {"presence_penalty", 0.5}},
      {{"model", "m"}, {"prompt", "x"}, {"max_token", 5}},  // unknown (a typo)
  };
  for (const json& body : bad) {
    EXPECT_EQ(Parse(body).status().code(), absl::StatusCode::kInvalidArgument) << body.dump();
  }
  EXPECT_EQ(ParseCompletionRequest("{not json", 16, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCompletionRequest("[1]", 16, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The issue's max_tokens 2^63 read "-9223372036854775808 < 1": it is named.
  const auto huge = ParseCompletionRequest(
      R"({"model": "m", "prompt": "x", "max_tokens": 9223372036854775808})", 16, 0);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("'max_tokens' is 9223372036854775808, too large"),
            std::string::npos)
      << huge.status();
  // A seed takes any 64 bits.
  const auto seed = ParseCompletionRequest(
      R"({"model": "m", "prompt": "x", "seed": 18446744073709551615})", 16, 0);
  ASSERT_TRUE(seed.ok()) << seed.status();
  EXPECT_EQ(seed->choices[0].sampling.seed, 18446744073709551615ULL);
}

// Values are not checked here: the stage checks them, as for gRPC.
TEST(OpenAiApiTest, ValuesAreLeftToTheStage) {
  auto r = Parse({{"model", "m"},
                  {"prompt", {-1, 99999}},
                  {"max_tokens", 0},
                  {"temperature", -3},
                  {"stop", {"", "a", "b", "c", "d"}}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->choices[0].max_new_tokens, 0);
  EXPECT_EQ(r->choices[0].stop.size(), 5u);
}

TEST(OpenAiApiTest, ResponsesHaveOpenAisShape) {
  const CompletionHeader header{"cmpl-1", 1700000000, "m"};
  CompletionChoice a;
  a.text = "hi";
  a.token_ids = {1, 2};
  a.summary.finish_reason = "length";
  a.summary.prompt_tokens = 5;
  a.summary.cached_prompt_tokens = 4;
  a.summary.output_tokens = 2;
  CompletionChoice b = a;
  b.summary.finish_reason = "stop";
  b.summary.output_tokens = 1;
  const json whole = CompletionJson(header, {a, b}, /*return_token_ids=*/true);
  EXPECT_EQ(whole["object"], "text_completion");
  EXPECT_EQ(whole["choices"][1]["index"], 1);
  EXPECT_EQ(whole["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(whole["choices"][0]["token_ids"], json({1, 2}));
  EXPECT_EQ(whole["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(whole["usage"]["completion_tokens"], 3);
  EXPECT_EQ(whole["usage"]["total_tokens"], 13);
  EXPECT_EQ(whole["usage"]["prompt_tokens_details"]["cached_tokens"], 8);

  const json chunk = ChunkJson(header, 0, "x", nullptr, "", true);
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(chunk["usage"].is_null());
  EXPECT_FALSE(chunk["choices"][0].contains("token_ids"));
  EXPECT_EQ(SseEvent(json{{"a", 1}}), "data: {\"a\":1}\n\n");

  const json error = ErrorJson(400, "bad", "");
  EXPECT_EQ(error["error"]["message"], "bad");
  EXPECT_EQ(error["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(error["error"]["code"].is_null());
  EXPECT_EQ(ModelsJson("m", 1)["data"][0]["id"], "m");
}

TEST(OpenAiApiTest, StatusCodesMapToHttp) {
  EXPECT_EQ(HttpStatusFor(absl::InvalidArgumentError("")), 400);
  EXPECT_EQ(HttpStatusFor(absl::NotFoundError("")), 404);
  EXPECT_EQ(HttpStatusFor(absl::ResourceExhaustedError("")), 429);
  EXPECT_EQ(HttpStatusFor(absl::UnavailableError("")), 503);
  EXPECT_EQ(HttpStatusFor(absl::DeadlineExceededError("")), 504);
  EXPECT_EQ(HttpStatusFor(absl::InternalError("")), 500);
}

}  // namespace openai_api_test
}  // namespace nanoserve
