#include "bench/load_workload.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace nanoserve {
namespace load_workload_test {

TEST(ParseLengthRange, FixedAndRange) {
  auto fixed = ParseLengthRange("128");
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->min, 128);
  EXPECT_EQ(fixed->max, 128);
  auto range = ParseLengthRange("64:256");
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(range->min, 64);
  EXPECT_EQ(range->max, 256);
  for (const char* bad : {"", "0", "-3", "9:8", "1:2:3", "a:b", "4:"}) {
    EXPECT_FALSE(ParseLengthRange(bad).ok()) << bad;
  }
}

WorkloadOptions Synthetic() {
  WorkloadOptions o;
  o.requests = 200;
  o.prompt_len = {8, 40};
  o.output_len = {3, 9};
  o.vocab_size = 100;
  o.seed = 5;
  return o;
}

TEST(BuildWorkload, LengthsAndIdsStayInTheirRangesAndSpanThem) {
  auto w = BuildWorkload(Synthetic());
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->size(), 200u);
  int64_t shortest = 1000, longest = 0, min_out = 1000, max_out = 0;
  for (const LoadPrompt& p : *w) {
    const auto n = static_cast<int64_t>(p.prompt_ids.size());
    shortest = std::min(shortest, n);
    longest = std::max(longest, n);
    min_out = std::min(min_out, p.max_tokens);
    max_out = std::max(max_out, p.max_tokens);
    EXPECT_TRUE(p.prompt_text.empty());
    EXPECT_FALSE(p.shared_prefix);
    for (int id : p.prompt_ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 100);
    }
  }
  EXPECT_EQ(shortest, 8);  // 200 draws of 33 values: both ends come up
  EXPECT_EQ(longest, 40);
  EXPECT_EQ(min_out, 3);
  EXPECT_EQ(max_out, 9);
}

TEST(BuildWorkload, SameSeedSameRequests) {
  auto a = BuildWorkload(Synthetic());
  auto b = BuildWorkload(Synthetic());
  WorkloadOptions other = Synthetic();
  other.seed = 6;
  auto c = BuildWorkload(other);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].prompt_ids, (*b)[i].prompt_ids);
    EXPECT_EQ((*a)[i].max_tokens, (*b)[i].max_tokens);
  }
  EXPECT_NE((*a)[0].prompt_ids, (*c)[0].prompt_ids);
}

TEST(BuildWorkload, ExactlyTheShareStartsWithOneCommonPrefix) {
  WorkloadOptions o = Synthetic();
  o.shared_prefix_len = 8;
  o.shared_prefix_share = 0.3;
  auto w = BuildWorkload(o);
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<int> prefix;
  int shared = 0;
  for (const LoadPrompt& p : *w) {
    if (!p.shared_prefix) continue;
    ++shared;
    const std::vector<int> head(p.prompt_ids.begin(), p.prompt_ids.begin() + 8);
    if (prefix.empty()) prefix = head;
    EXPECT_EQ(head, prefix);
  }
  EXPECT_EQ(shared, 60);
  // The others do not start with it (random ids: a chance of 100^-8).
  for (const LoadPrompt& p : *w) {
    if (p.shared_prefix) continue;
    EXPECT_NE(std::vector<int>(p.prompt_ids.begin(), p.prompt_ids.begin() + 8), prefix);
  }
  // The shared ones are spread over the run, not only its start.
  int in_second_half = 0;
  for (size_t i = 100; i < 200; ++i) in_second_half += (*w)[i].shared_prefix;
  EXPECT_GT(in_second_half, 0);
  EXPECT_LT(in_second_half, 60);
}

TEST(BuildWorkload, RefusesOptionsOutOfRange) {
  WorkloadOptions o = Synthetic();
  o.shared_prefix_len = 9;  // longer than the shortest prompt (8)
  o.shared_prefix_share = 0.5;
  EXPECT_EQ(BuildWorkload(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Synthetic();
  o.shared_prefix_share = 1.5;
  EXPECT_FALSE(BuildWorkload(o).ok());
  o = Synthetic();
  o.requests = 0;
  EXPECT_FALSE(BuildWorkload(o).ok());
  o = Synthetic();
  o.prompts_file = "/nonexistent/prompts.txt";
  EXPECT_EQ(BuildWorkload(o).status().code(), absl::StatusCode::kNotFound);
}

TEST(ParsePromptsFile, TextLinesAndJsonLines) {
  auto p = ParsePromptsFile(
      "Hello there\n\n{\"prompt\": \"as JSON\", \"max_tokens\": 7}\n{\"prompt\": [1, 2, 3]}\n");
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ((*p)[0].prompt_text, "Hello there");
  EXPECT_EQ((*p)[0].max_tokens, 0);
  EXPECT_EQ((*p)[1].prompt_text, "as JSON");
  EXPECT_EQ((*p)[1].max_tokens, 7);
  EXPECT_EQ((*p)[2].prompt_ids, (std::vector<int>{1, 2, 3}));
}

TEST(ParsePromptsFile, NamesTheBadLine) {
  auto p = ParsePromptsFile("fine\n{\"prompt\": 5}\n");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("line 2"), absl::string_view::npos) << p.status();
  EXPECT_FALSE(ParsePromptsFile("{\"prompt\": \"x\", \"max_tokens\": 0}").ok());
  EXPECT_FALSE(ParsePromptsFile("\n\n").ok());
}

TEST(BuildWorkload, FilePromptsCycleAndTakeDrawnOutputLengths) {
  char path[] = "/tmp/nanoserve_prompts_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string content = "first\n{\"prompt\": \"second\", \"max_tokens\": 2}\n";
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  close(fd);
  WorkloadOptions o;
  o.requests = 5;
  o.output_len = {4, 4};
  o.prompts_file = path;
  auto w = BuildWorkload(o);
  std::remove(path);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->size(), 5u);
  EXPECT_EQ((*w)[0].prompt_text, "first");
  EXPECT_EQ((*w)[0].max_tokens, 4);
  EXPECT_EQ((*w)[1].prompt_text, "second");
  EXPECT_EQ((*w)[1].max_tokens, 2);
  EXPECT_EQ((*w)[4].prompt_text, "first");
  o.shared_prefix_len = 4;
  o.shared_prefix_share = 1;
  // A shared prefix needs synthetic prompts.
  EXPECT_EQ(BuildWorkload(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace load_workload_test
}  // namespace nanoserve
