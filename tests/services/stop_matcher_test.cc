// StopMatcher: text before the first stop string, held back only while it
// may begin one, whatever the pieces' boundaries.
#include "decode_service/stop_matcher.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace nanoserve {
namespace stop_matcher_test {

// The text returned while pushing `pieces` one by one, then the flush.
std::string Feed(StopMatcher& m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) out += m.Push(p);
  return out + m.Flush();
}

TEST(StopMatcherTest, NoStopStringsPassEverything) {
  StopMatcher m({});
  EXPECT_EQ(m.Push("ab"), "ab");
  EXPECT_EQ(m.Push(""), "");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcherTest, EndsBeforeTheStopStringAcrossPieces) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Push("hello E"), "hello ");  // "E" may begin "END"
  EXPECT_EQ(m.Push("N"), "");
  EXPECT_EQ(m.Push("D and more"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.Push("later"), "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcherTest, AFalseStartIsReleased) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Push("EN"), "");
  EXPECT_EQ(m.Push("x"), "ENx");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.Push("E"), "");
  EXPECT_EQ(m.Flush(), "E");  // the end: no stop string follows
}

TEST(StopMatcherTest, TheEarliestOfSeveralWins) {
  StopMatcher m({"world", "lo w"});
  EXPECT_EQ(Feed(m, {"hel", "lo ", "world"}), "hel");
  EXPECT_TRUE(m.stopped());
}

TEST(StopMatcherTest, EveryWayOfCuttingGivesTheSameText) {
  const std::string text = "abcabxabcaby tail";
  for (size_t cut1 = 0; cut1 <= text.size(); ++cut1) {
    for (size_t cut2 = cut1; cut2 <= text.size(); ++cut2) {
      StopMatcher m({"abcaby", "zz"});
      const std::string out =
          Feed(m, {text.substr(0, cut1), text.substr(cut1, cut2 - cut1), text.substr(cut2)});
      EXPECT_EQ(out, "abcabx") << cut1 << " " << cut2;
      EXPECT_TRUE(m.stopped());
    }
  }
}

}  // namespace stop_matcher_test
}  // namespace nanoserve
