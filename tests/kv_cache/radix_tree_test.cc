#include "kv_cache/radix_tree.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace nanoserve {
namespace radix_tree_test {

using Tokens = std::vector<int32_t>;
// Values of another type than page ids: the tree is generic.
using Tree = RadixTree<std::string>;

std::vector<std::string> Names(const std::string& prefix, int n) {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(prefix + std::to_string(i));
  return names;
}

// The token runs of the children of `node`, via a walk over the whole tree.
std::vector<Tokens> ChildRuns(const Tree& tree, const Tree::Node* node) {
  std::vector<Tokens> runs;
  tree.ForEachNode([&](const Tree::Node& n) {
    if (n.parent() == node) runs.emplace_back(n.tokens().begin(), n.tokens().end());
  });
  std::sort(runs.begin(), runs.end());
  return runs;
}

const Tree::Node* FindNode(const Tree& tree, const Tokens& path) {
  const Tree::Node* found = nullptr;
  tree.ForEachNode([&](const Tree::Node& n) {
    if (Tree::PathTokens(&n) == path) found = &n;
  });
  return found;
}

TEST(RadixTreeTest, SeedExampleBuildsTheExpectedTree) {
  Tree tree(1);
  const Tokens a = {1, 2, 3, 4}, b = {1, 2, 3, 5}, c = {1, 2, 6};
  EXPECT_EQ(tree.Insert("", a, Names("a", 4), nullptr).existing_length, 0);
  EXPECT_EQ(tree.Insert("", b, Names("b", 4), nullptr).existing_length, 3);
  EXPECT_EQ(tree.Insert("", c, Names("c", 3), nullptr).existing_length, 2);
  ASSERT_TRUE(tree.CheckInvariants().ok()) << tree.CheckInvariants();

  //   root - [1 2] - [3] - [4]
  //                      \ [5]
  //              \ [6]
  EXPECT_EQ(tree.num_nodes(), 5);
  EXPECT_EQ(tree.num_values(), 6);
  EXPECT_EQ(ChildRuns(tree, tree.root("")), (std::vector<Tokens>{{1, 2}}));
  const Tree::Node* n12 = FindNode(tree, {1, 2});
  ASSERT_NE(n12, nullptr);
  EXPECT_EQ(ChildRuns(tree, n12), (std::vector<Tokens>{{3}, {6}}));
  const Tree::Node* n3 = FindNode(tree, {1, 2, 3});
  ASSERT_NE(n3, nullptr);
  EXPECT_EQ(ChildRuns(tree, n3), (std::vector<Tokens>{{4}, {5}}));

  // Values: shared parts keep the first writer's.
  std::vector<std::string> values;
  EXPECT_EQ(tree.Peek("", b, &values), 4);
  EXPECT_EQ(values, (std::vector<std::string>{"a0", "a1", "a2", "b3"}));
  values.clear();
  EXPECT_EQ(tree.Peek("", {1, 2, 6, 7}, &values), 3);
  EXPECT_EQ(values, (std::vector<std::string>{"a0", "a1", "c2"}));
  EXPECT_EQ(tree.Peek("", {1, 9}, nullptr), 1);
  EXPECT_EQ(tree.Peek("", {9}, nullptr), 0);
  EXPECT_EQ(tree.Peek("", {}, nullptr), 0);
}

TEST(RadixTreeTest, MatchSplitsSoTheResultEndsAtANode) {
  Tree tree(1);
  tree.Insert("", {1, 2, 3, 4}, Names("a", 4), nullptr);
  ASSERT_EQ(tree.num_nodes(), 1);
  std::vector<std::string> values;
  Tree::MatchResult m = tree.Match("", {1, 2, 9}, &values);
  EXPECT_EQ(m.length, 2);
  EXPECT_EQ(values, (std::vector<std::string>{"a0", "a1"}));
  EXPECT_EQ(tree.num_nodes(), 2);
  EXPECT_EQ(Tree::PathTokens(m.node), (Tokens{1, 2}));
  EXPECT_TRUE(tree.CheckInvariants().ok());
  // No match: no node, and nothing changes.
  EXPECT_EQ(tree.Match("", {7}, nullptr).node, nullptr);
  EXPECT_EQ(tree.num_nodes(), 2);
}

TEST(RadixTreeTest, GranulesKeepDivergingPagesApart) {
  // Granularity 4: [1 2 3 4] and [1 2 3 5] differ inside the first granule,
  // so they are two children of the root although both start with 1.
  Tree tree(4);
  tree.Insert("", {1, 2, 3, 4, 9, 9, 9, 9}, Names("a", 2), nullptr);
  EXPECT_EQ(tree.Insert("", {1, 2, 3, 5}, Names("b", 1), nullptr).existing_length, 0);
  EXPECT_EQ(ChildRuns(tree, tree.root("")),
            (std::vector<Tokens>{{1, 2, 3, 4, 9, 9, 9, 9}, {1, 2, 3, 5}}));
  // Matches count whole granules only.
  EXPECT_EQ(tree.Peek("", {1, 2, 3, 4, 9, 9, 9}, nullptr), 4);
  EXPECT_EQ(tree.Peek("", {1, 2, 3, 4, 9, 9, 9, 8}, nullptr), 4);
  EXPECT_EQ(tree.Peek("", {1, 2, 3}, nullptr), 0);
  // Diverging in the second granule splits at the granule boundary.
  EXPECT_EQ(tree.Insert("", {1, 2, 3, 4, 9, 9, 0, 0}, Names("c", 2), nullptr).existing_length, 4);
  EXPECT_NE(FindNode(tree, {1, 2, 3, 4}), nullptr);
  EXPECT_EQ(tree.num_nodes(), 4);
  EXPECT_TRUE(tree.CheckInvariants().ok()) << tree.CheckInvariants();
}

TEST(RadixTreeTest, EvictsLeastRecentlyUsedLeafFromItsTail) {
  Tree tree(1);
  tree.Insert("", {1, 1, 1}, Names("a", 3), nullptr);
  tree.Insert("", {2, 2}, Names("b", 2), nullptr);
  tree.Insert("", {3}, Names("c", 1), nullptr);
  tree.Match("", {1, 1, 1}, nullptr);  // a is now the most recent
  std::vector<std::string> evicted;
  auto record = [&](const std::string& v) { evicted.push_back(v); };
  EXPECT_EQ(tree.Evict(1, record), 1);
  EXPECT_EQ(evicted, (std::vector<std::string>{"b1"}));  // b's tail
  EXPECT_EQ(tree.Peek("", {2, 2}, nullptr), 1);
  EXPECT_EQ(tree.Evict(2, record), 2);
  EXPECT_EQ(evicted, (std::vector<std::string>{"b1", "b0", "c0"}));
  EXPECT_EQ(tree.num_nodes(), 1);
  EXPECT_EQ(tree.Peek("", {1, 1, 1}, nullptr), 3);
  EXPECT_TRUE(tree.CheckInvariants().ok());
}

TEST(RadixTreeTest, PinnedPathsSurviveEviction) {
  Tree tree(1);
  tree.Insert("", {1, 2, 3}, Names("a", 3), nullptr);
  Tree::InsertResult b = tree.Insert("", {1, 2, 4, 5}, Names("b", 4), nullptr);
  tree.Pin(b.node);  // pins [1 2] and [4 5]
  EXPECT_EQ(tree.num_pinned_values(), 4);
  std::vector<std::string> evicted;
  EXPECT_EQ(tree.Evict(100, [&](const std::string& v) { evicted.push_back(v); }), 1);
  EXPECT_EQ(evicted, (std::vector<std::string>{"a2"}));
  EXPECT_EQ(tree.Peek("", {1, 2, 4, 5}, nullptr), 4);
  // A split under a pin keeps the pin on both halves.
  tree.Insert("", {1, 2, 4, 6}, Names("c", 4), nullptr);
  EXPECT_TRUE(tree.CheckInvariants().ok()) << tree.CheckInvariants();
  EXPECT_EQ(tree.num_pinned_values(), 4);
  tree.Unpin(b.node);
  EXPECT_EQ(tree.num_pinned_values(), 0);
  EXPECT_EQ(tree.Evict(100, [](const std::string&) {}), 5);
  EXPECT_EQ(tree.num_nodes(), 0);
  EXPECT_EQ(tree.num_values(), 0);
  EXPECT_TRUE(tree.CheckInvariants().ok());
}

TEST(RadixTreeTest, NamespacesNeverMatchEachOther) {
  Tree tree(2);
  const Tokens key = {1, 2, 3, 4};
  EXPECT_EQ(tree.Insert("tenant-a", key, Names("a", 2), nullptr).existing_length, 0);
  // The same key in another namespace is new there, with its own values.
  EXPECT_EQ(tree.Peek("tenant-b", key, nullptr), 0);
  EXPECT_EQ(tree.Match("tenant-b", key, nullptr).node, nullptr);
  EXPECT_EQ(tree.Peek("", key, nullptr), 0);
  EXPECT_EQ(tree.Insert("tenant-b", key, Names("b", 2), nullptr).existing_length, 0);
  std::vector<std::string> values;
  Tree::MatchResult a = tree.Match("tenant-a", key, &values);
  EXPECT_EQ(a.length, 4);
  EXPECT_EQ(values, (std::vector<std::string>{"a0", "a1"}));
  values.clear();
  EXPECT_EQ(tree.Match("tenant-b", {1, 2, 9, 9}, &values).length, 2);
  EXPECT_EQ(values, (std::vector<std::string>{"b0"}));
  EXPECT_EQ(Tree::NamespaceOf(a.node), "tenant-a");
  EXPECT_EQ(tree.num_namespaces(), 2);
  EXPECT_EQ(tree.num_values(), 4);
  EXPECT_TRUE(tree.CheckInvariants().ok()) << tree.CheckInvariants();
}

TEST(RadixTreeTest, EvictionIsLeastRecentlyUsedAcrossNamespacesAndDropsEmptyOnes) {
  Tree tree(1);
  tree.Insert("x", {1, 1}, Names("x", 2), nullptr);
  tree.Insert("y", {1, 1}, Names("y", 2), nullptr);
  Tree::InsertResult z = tree.Insert("", {1, 1}, Names("z", 2), nullptr);
  tree.Pin(z.node);
  tree.Match("x", {1, 1}, nullptr);  // x is now more recent than y
  std::vector<std::string> evicted;
  auto record = [&](const std::string& v) { evicted.push_back(v); };
  EXPECT_EQ(tree.Evict(2, record), 2);
  EXPECT_EQ(evicted, (std::vector<std::string>{"y1", "y0"}));
  EXPECT_EQ(tree.root("y"), nullptr);  // gone with its last value
  EXPECT_EQ(tree.num_namespaces(), 2);
  EXPECT_TRUE(tree.CheckInvariants().ok()) << tree.CheckInvariants();
  // The pinned namespace survives; the rest goes.
  EXPECT_EQ(tree.Evict(100, record), 2);
  EXPECT_EQ(tree.root("x"), nullptr);
  EXPECT_NE(tree.root(""), nullptr);
  EXPECT_EQ(tree.Peek("", {1, 1}, nullptr), 2);
  tree.Unpin(z.node);
  EXPECT_EQ(tree.Evict(100, record), 2);
  EXPECT_EQ(tree.num_namespaces(), 0);
  EXPECT_EQ(tree.num_nodes(), 0);
  EXPECT_TRUE(tree.CheckInvariants().ok()) << tree.CheckInvariants();
  // An empty key stores nothing and makes no namespace.
  EXPECT_EQ(tree.Insert("w", {}, {}, nullptr).node, nullptr);
  EXPECT_EQ(tree.num_namespaces(), 0);
}

}  // namespace radix_tree_test
}  // namespace nanoserve
