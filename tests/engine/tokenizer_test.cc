#include "engine/tokenizer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util/temp_path.h"

namespace nanoserve {
namespace tokenizer_test {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> loaded =
        Gpt2Tokenizer::Load(NANOSERVE_SOURCE_DIR "/data/gpt2");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = loaded->release();
  }
  static void TearDownTestSuite() { delete tokenizer_; }

  static std::string Decoded(const std::vector<int>& ids) {
    absl::StatusOr<std::string> text = tokenizer_->Decode(ids);
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : "";
  }
  // The text of each token, to check how text was split.
  static std::vector<std::string> Pieces(const std::string& text) {
    std::vector<std::string> pieces;
    for (int id : tokenizer_->Encode(text)) pieces.push_back(Decoded({id}));
    return pieces;
  }
  static void ExpectRoundTrip(const std::string& text) {
    EXPECT_EQ(Decoded(tokenizer_->Encode(text)), text);
    EXPECT_EQ(Decoded(tokenizer_->EncodeOrdinary(text)), text);
  }

  static Gpt2Tokenizer* tokenizer_;
};
Gpt2Tokenizer* TokenizerTest::tokenizer_ = nullptr;

// The exact ids below are tiktoken's gpt2 outputs.
TEST_F(TokenizerTest, KnownIds) {
  EXPECT_EQ(tokenizer_->vocab_size(), 50257);
  EXPECT_THAT(tokenizer_->Encode("Hello, world!"), ElementsAre(15496, 11, 995, 0));
  EXPECT_THAT(tokenizer_->Encode(" hello world"), ElementsAre(23748, 995));
  // \s+(?!\S) leaves the last space to join the next word.
  EXPECT_THAT(tokenizer_->Encode("hello  world"), ElementsAre(31373, 220, 995));
  EXPECT_TRUE(tokenizer_->Encode("").empty());
  // The longest GPT-2 token stands for 128 bytes: a bound on text per token.
  EXPECT_EQ(tokenizer_->max_token_bytes(), 128);
}

TEST_F(TokenizerTest, EndOfText) {
  EXPECT_THAT(tokenizer_->Encode("<|endoftext|>"), ElementsAre(Gpt2Tokenizer::kEndOfText));
  const std::vector<int> ordinary = tokenizer_->EncodeOrdinary("<|endoftext|>");
  EXPECT_GT(ordinary.size(), 1u);
  EXPECT_THAT(ordinary, Not(Contains(Gpt2Tokenizer::kEndOfText)));
  EXPECT_EQ(Decoded(ordinary), "<|endoftext|>");

  const std::vector<int> ids = tokenizer_->Encode("a<|endoftext|><|endoftext|>b");
  EXPECT_THAT(ids, ElementsAre(tokenizer_->Encode("a")[0], Gpt2Tokenizer::kEndOfText,
                               Gpt2Tokenizer::kEndOfText, tokenizer_->Encode("b")[0]));
  EXPECT_EQ(Decoded(ids), "a<|endoftext|><|endoftext|>b");
}

TEST_F(TokenizerTest, SplitsLikeGpt2) {
  EXPECT_THAT(Pieces("I'm can't we'll"), ElementsAre("I", "'m", " can", "'t", " we", "'ll"));
  EXPECT_THAT(Pieces("12345"), ElementsAre("123", "45"));
  EXPECT_THAT(Pieces("a   b"), ElementsAre("a", " ", " ", " b"));
  // Trailing whitespace is one piece, " \n\n", which BPE splits in two.
  EXPECT_THAT(Pieces("hello \n\n"), ElementsAre("hello", " ", "\n\n"));
  // U+180E is not White_Space (PCRE2's \s would take it): the space before it
  // starts a punctuation piece instead of ending a whitespace run.
  EXPECT_THAT(tokenizer_->Encode("x \u180ey"), Not(Contains(220)));
  EXPECT_THAT(tokenizer_->Encode("x \u2003y"),
              Contains(220));  // U+2003 is White_Space
  for (const char* text : {"I'm can't we'll", "12345", "a   b", "x \t\n  ", "  \n"}) {
    ExpectRoundTrip(text);
  }
}

TEST_F(TokenizerTest, NonAsciiRoundTrips) {
  for (const char* text : {"héllo wörld", "日本語", "👋🌍🤖", "Ελληνικά  κείμενο\n",
                           "e\u0301\u00a0\u3000x", "٣٤٥ ①②"}) {
    ExpectRoundTrip(text);
  }
  // "日本語" needs byte-level tokens: each character is split over two.
  EXPECT_EQ(tokenizer_->Encode("日本語").size(), 6u);
}

TEST_F(TokenizerTest, RandomUnicodeRoundTrips) {
  // Code points from ranges with letters, digits, marks, spaces, symbols.
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E},     {0x09, 0x0D},     {0xA0, 0x24F},      {0x300, 0x36F},
      {0x391, 0x3C9},   {0x400, 0x4FF},   {0x600, 0x6FF},     {0x2000, 0x206F},
      {0x3000, 0x30FF}, {0x4E00, 0x9FFF}, {0x1F300, 0x1F6FF}, {0x10000, 0x10FFFF}};
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text;
    const int length = rng() % 40;
    for (int i = 0; i < length; ++i) {
      const auto& [low, high] = ranges[rng() % ranges.size()];
      char32_t c = low + rng() % (high - low + 1);
      if (c < 0x80) {
        text += static_cast<char>(c);
      } else if (c < 0x800) {
        text += static_cast<char>(0xC0 | c >> 6);
        text += static_cast<char>(0x80 | (c & 0x3F));
      } else if (c < 0x10000) {
        text += static_cast<char>(0xE0 | c >> 12);
        text += static_cast<char>(0x80 | (c >> 6 & 0x3F));
        text += static_cast<char>(0x80 | (c & 0x3F));
      } else {
        text += static_cast<char>(0xF0 | c >> 18);
        text += static_cast<char>(0x80 | (c >> 12 & 0x3F));
        text += static_cast<char>(0x80 | (c >> 6 & 0x3F));
        text += static_cast<char>(0x80 | (c & 0x3F));
      }
    }
    const std::vector<int> ids = tokenizer_->Encode(text);
    ASSERT_EQ(Decoded(ids), text) << "trial " << trial;
    // Streaming valid UTF-8 gives back exactly the text.
    StreamingDecoder decoder(*tokenizer_);
    std::string streamed;
    for (int id : ids) streamed += *decoder.Push(id);
    streamed += decoder.Flush();
    ASSERT_EQ(streamed, text) << "trial " << trial;
  }
}

TEST_F(TokenizerTest, RandomBytesRoundTrip) {
  std::mt19937 rng(5678);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes(rng() % 40, '\0');
    for (char& b : bytes) b = static_cast<char>(rng());
    const std::vector<int> ids = tokenizer_->EncodeOrdinary(bytes);
    ASSERT_THAT(ids, Not(Contains(Gpt2Tokenizer::kEndOfText)));
    ASSERT_EQ(Decoded(ids), bytes) << "trial " << trial;
  }
  ExpectRoundTrip(std::string("\xff\xfe a\x80\xc3(\xed\xa0\x80 \xf0\x9f\x98", 15));
  ExpectRoundTrip(std::string("a\0b", 3));
}

TEST_F(TokenizerTest, LongInputs) {
  ExpectRoundTrip(std::string(100000, ' ') + "x");
  ExpectRoundTrip(std::string(100000, '='));
  ExpectRoundTrip(std::string(100000, '\xff'));
}

TEST_F(TokenizerTest, DecodeRejectsUnknownIds) {
  EXPECT_TRUE(tokenizer_->IsValidId(0));
  EXPECT_TRUE(tokenizer_->IsValidId(50256));
  EXPECT_FALSE(tokenizer_->IsValidId(50257));
  EXPECT_FALSE(tokenizer_->IsValidId(-1));
  for (int bad : {50257, -1}) {
    absl::StatusOr<std::string> text = tokenizer_->Decode({15496, bad});
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(text.status().message(), HasSubstr(absl::StrCat(bad)));
  }
}

TEST_F(TokenizerTest, ConcurrentEncodesAgree) {
  const std::string text = "The quick brown fox, 12 times: 日本語 👋 <|endoftext|> done.\n";
  const std::vector<int> expected = tokenizer_->Encode(text);
  std::vector<std::thread> threads;
  std::vector<bool> agreed(4, true);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) agreed[t] = agreed[t] && tokenizer_->Encode(text) == expected;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(agreed, Not(Contains(false)));
}

TEST_F(TokenizerTest, StreamingHoldsBackSplitCharacters) {
  // "é" is C3 A9; alone, each byte is a single-byte token.
  const std::vector<int> first = tokenizer_->EncodeOrdinary("\xc3");
  const std::vector<int> second = tokenizer_->EncodeOrdinary("\xa9");
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  StreamingDecoder decoder(*tokenizer_);
  std::string caf;
  for (int id : tokenizer_->Encode("caf")) caf += *decoder.Push(id);
  EXPECT_EQ(caf, "caf");
  EXPECT_EQ(*decoder.Push(first[0]), "");
  EXPECT_EQ(*decoder.Push(second[0]), "é");
  EXPECT_EQ(decoder.Flush(), "");

  // A character split across tokens by BPE itself.
  const std::string text = "日本語 👋🌍🤖";
  const std::vector<int> ids = tokenizer_->Encode(text);
  std::string streamed;
  bool held_back = false;
  for (int id : ids) {
    const std::string piece = *decoder.Push(id);
    held_back = held_back || piece != Decoded({id});
    streamed += piece;
  }
  streamed += decoder.Flush();
  EXPECT_TRUE(held_back);
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(streamed, Decoded(ids));
}

TEST_F(TokenizerTest, StreamingReplacesInvalidBytes) {
  const auto byte_token = [](const char* byte) { return tokenizer_->EncodeOrdinary(byte)[0]; };
  StreamingDecoder decoder(*tokenizer_);
  EXPECT_EQ(*decoder.Push(byte_token("\xff")), "\xEF\xBF\xBD");
  EXPECT_EQ(*decoder.Push(byte_token("\xe6")), "");
  EXPECT_EQ(*decoder.Push(byte_token("\x97")), "");
  EXPECT_EQ(*decoder.Push(byte_token("a")),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(*decoder.Push(byte_token("\xf0")), "");
  EXPECT_EQ(decoder.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(decoder.Flush(), "");
  EXPECT_EQ(decoder.Push(50257).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerLoadTest, LoadDefaultFindsVocabulary) {
  absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> tokenizer = Gpt2Tokenizer::LoadDefault();
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 50257);
}

TEST(TokenizerLoadTest, ErrorsNameTheFile) {
  absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> missing =
      Gpt2Tokenizer::Load("/nonexistent/vocab");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/vocab/encoder.json"));

  const std::string dir = ::nanoserve::testing::ProcessTempPath("tokenizer_test_bad_vocab");
  ASSERT_TRUE(::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) << dir;
  for (const char* name : {"encoder.json", "vocab.bpe"}) {
    std::FILE* file = std::fopen((dir + "/" + name).c_str(), "w");
    ASSERT_NE(file, nullptr);
    std::fputs("{not json", file);
    std::fclose(file);
  }
  absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> malformed = Gpt2Tokenizer::Load(dir);
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(malformed.status().message(), HasSubstr(dir + "/encoder.json"));
}

}  // namespace tokenizer_test
}  // namespace nanoserve
