// A radix tree (compressed trie) over runs of token ids, generic in the value
// stored per granule. It knows nothing of tensors or KV pages: PrefixCache
// uses it with Value = page index and granularity = page size.
//
// Keys are sequences of tokens cut into granules of `granularity` tokens. A
// node holds a non-empty run of whole granules (`tokens`, a multiple of
// granularity long) and one value per granule (`values`); a path from the
// root spells a stored key, and a key's values are the concatenated values
// along its path. Matching and insertion work on whole granules: a match
// length is always a multiple of granularity, and nodes split only at granule
// boundaries. With granularity 1 this is the classic per-token radix tree.
//
// Namespaces: keys live in separate namespaces (strings), each a tree of
// its own under its own root, so a key never matches a key of another
// namespace ("" is a namespace like any other). A namespace's root exists
// while the namespace holds a key: Insert creates it, and Evict removes it
// with the namespace's last value. Node counts, the LRU clock and eviction
// span all namespaces.
//
// Pins: Pin(node) protects the path root..node from eviction until the
// matching Unpin. A node's ref_count is the number of pins on it or on any
// node below it, so an unpinned node (ref_count 0) has only unpinned nodes
// under it. Pinned node pointers stay valid: splits keep the lower half in
// the original Node object (the one that ends where the pinned path ends).
//
// LRU: a logical clock ticks once per Match or Insert; both stamp every node
// on the path they return with the new tick. Evict removes values from the
// unpinned leaf with the oldest stamp first, trimming it from its tail, so
// the tree always stays a set of prefix-closed keys.
//
// Invariants (checked by CheckInvariants()):
//   * every non-root node has 1+ granules: tokens.size() == granularity *
//     values.size() > 0; a root holds none and has 1+ children;
//   * a node's children start with pairwise distinct first granules, and the
//     map key of a child is its first granule;
//   * ref_count(n) == direct pins on n + sum of ref_count over its children;
//   * last_access(parent) >= last_access(child) for non-root nodes;
//   * num_nodes(), num_values(), num_pinned_values() equal the counts over
//     the tree (pinned values: values of nodes with ref_count > 0).
//
// Thread safety: thread-compatible. Const methods may run concurrently;
// everything else needs external synchronization (PrefixCache's mutex).
#ifndef NANOSERVE_KV_CACHE_RADIX_TREE_H_
#define NANOSERVE_KV_CACHE_RADIX_TREE_H_

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace nanoserve {

template <typename Value>
class RadixTree {
 public:
  using Token = int32_t;

  class Node {
   public:
    // The granules this node adds to its parent's key, and their values.
    absl::Span<const Token> tokens() const { return tokens_; }
    absl::Span<const Value> values() const { return values_; }
    const Node* parent() const { return parent_; }  // null for a root
    int64_t ref_count() const { return ref_count_; }
    int64_t direct_pins() const { return direct_pins_; }
    uint64_t last_access() const { return last_access_; }
    bool is_leaf() const { return children_.empty(); }
    size_t num_children() const { return children_.size(); }

   private:
    friend class RadixTree;
    // Orders child keys (one granule) and looks them up by span, without
    // building a vector per lookup.
    struct GranuleLess {
      using is_transparent = void;
      static bool Less(absl::Span<const Token> a, absl::Span<const Token> b) {
        return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
      }
      bool operator()(const std::vector<Token>& a, const std::vector<Token>& b) const {
        return Less(a, b);
      }
      bool operator()(const std::vector<Token>& a, absl::Span<const Token> b) const {
        return Less(a, b);
      }
      bool operator()(absl::Span<const Token> a, const std::vector<Token>& b) const {
        return Less(a, b);
      }
    };
    using Children = std::map<std::vector<Token>, std::unique_ptr<Node>, GranuleLess>;

    std::vector<Token> tokens_;
    std::vector<Value> values_;
    Node* parent_ = nullptr;
    const std::string* namespace_ = nullptr;  // a root's: its key in roots_
    Children children_;                       // keyed by each child's first granule
    int64_t ref_count_ = 0;
    int64_t direct_pins_ = 0;
    uint64_t last_access_ = 0;
  };

  struct MatchResult {
    int64_t length = 0;  // matched tokens, a multiple of granularity
    // The node whose path ends at `length`; null when length is 0.
    Node* node = nullptr;
  };

  struct InsertResult {
    int64_t existing_length = 0;  // tokens of the key already stored before
    // The node whose path ends at the key's end; null for an empty key.
    Node* node = nullptr;
  };

  // REQUIRES: granularity >= 1.
  explicit RadixTree(int64_t granularity) : granularity_(granularity) {
    Require(granularity >= 1, "RadixTree granularity must be >= 1");
  }
  RadixTree(const RadixTree&) = delete;
  RadixTree& operator=(const RadixTree&) = delete;

  int64_t granularity() const { return granularity_; }
  // The root of namespace `ns`; null while the namespace holds nothing.
  const Node* root(absl::string_view ns) const {
    auto it = roots_.find(ns);
    return it == roots_.end() ? nullptr : it->second.get();
  }
  int64_t num_namespaces() const { return static_cast<int64_t>(roots_.size()); }
  int64_t num_nodes() const { return num_nodes_; }  // excluding the roots
  int64_t num_values() const { return num_values_; }
  int64_t num_pinned_values() const { return num_pinned_values_; }

  // Finds the longest prefix of `key` stored in namespace `ns`, in whole
  // granules (trailing tokens short of a granule are ignored). Splits the
  // node the match ends inside, so that result.node ends exactly at
  // result.length, and stamps the path. Appends the matched values to
  // *values when it is not null.
  MatchResult Match(absl::string_view ns, absl::Span<const Token> key, std::vector<Value>* values) {
    ++clock_;
    Position pos = Walk(ns, key);
    if (pos.length == 0) return {0, nullptr};
    Node* node = pos.partial ? Split(pos.partial, pos.partial_granules) : pos.node;
    Touch(node);
    if (values != nullptr) AppendPathValues(node, values);
    return {pos.length, node};
  }

  // The length Match would return, and its values, without changing
  // anything (no split, no stamp).
  int64_t Peek(absl::string_view ns, absl::Span<const Token> key,
               std::vector<Value>* values) const {
    Position pos = Walk(ns, key);
    if (values != nullptr && pos.length > 0) {
      AppendPathValues(pos.node, values);
      if (pos.partial != nullptr) {
        const auto& v = pos.partial->values_;
        values->insert(values->end(), v.begin(), v.begin() + pos.partial_granules);
      }
    }
    return pos.length;
  }

  // Stores `key` in namespace `ns` with one value per granule. Where a
  // prefix of the key is stored there already, the tree keeps its own
  // values for it and ignores values[0, existing_length / granularity).
  // Splits as needed so that result.node ends exactly at the key's end, and
  // stamps the path. Appends the tree's values for the whole key to
  // *tree_values when it is not null. An empty key changes nothing.
  // REQUIRES: key.size() % granularity == 0,
  //           values.size() == key.size() / granularity.
  InsertResult Insert(absl::string_view ns, absl::Span<const Token> key,
                      absl::Span<const Value> values, std::vector<Value>* tree_values) {
    Require(
        static_cast<int64_t>(key.size()) % granularity_ == 0 &&
            static_cast<int64_t>(values.size()) * granularity_ == static_cast<int64_t>(key.size()),
        "RadixTree::Insert: key and values disagree");
    if (key.empty()) return {0, nullptr};
    ++clock_;
    if (roots_.find(ns) == roots_.end()) {
      auto [it, inserted] = roots_.emplace(std::string(ns), std::make_unique<Node>());
      it->second->namespace_ = &it->first;
    }
    Position pos = Walk(ns, key);
    Node* node = pos.partial ? Split(pos.partial, pos.partial_granules) : pos.node;
    if (pos.length < static_cast<int64_t>(key.size())) {
      auto leaf = std::make_unique<Node>();
      leaf->tokens_.assign(key.begin() + pos.length, key.end());
      leaf->values_.assign(values.begin() + pos.length / granularity_, values.end());
      leaf->parent_ = node;
      num_values_ += static_cast<int64_t>(leaf->values_.size());
      ++num_nodes_;
      Node* raw = leaf.get();
      node->children_.emplace(FirstGranuleKey(*raw), std::move(leaf));
      node = raw;
    }
    Touch(node);
    if (tree_values != nullptr) AppendPathValues(node, tree_values);
    return {pos.length, node};
  }

  // Protects the path root..node from eviction. REQUIRES: node is in this
  // tree and is not a root.
  void Pin(Node* node) {
    Require(node->parent_ != nullptr, "RadixTree::Pin: cannot pin a root");
    ++node->direct_pins_;
    for (Node* n = node; n->parent_ != nullptr; n = n->parent_) {
      if (n->ref_count_++ == 0) {
        num_pinned_values_ += static_cast<int64_t>(n->values_.size());
      }
    }
  }

  // Undoes one Pin(node). REQUIRES: node has a direct pin.
  void Unpin(Node* node) {
    Require(node->parent_ != nullptr && node->direct_pins_ > 0,
            "RadixTree::Unpin: node is not pinned");
    --node->direct_pins_;
    for (Node* n = node; n->parent_ != nullptr; n = n->parent_) {
      if (--n->ref_count_ == 0) {
        num_pinned_values_ -= static_cast<int64_t>(n->values_.size());
      }
    }
  }

  // Removes up to `max_values` values (granules) from unpinned leaves, the
  // least recently used leaf first and each leaf from its tail, dropping
  // leaves that become empty (whose parents may then become evictable
  // leaves), whatever their namespace; a namespace left empty is removed.
  // Calls on_evict(value) for each removed value. Returns how many were
  // removed: min(max_values, num_values() - num_pinned_values()).
  int64_t Evict(int64_t max_values, const std::function<void(const Value&)>& on_evict) {
    if (max_values <= 0) return 0;
    using Entry = std::pair<uint64_t, Node*>;
    auto older_last = [](const Entry& a, const Entry& b) {
      if (a.first != b.first) return a.first > b.first;
      return std::less<Node*>()(b.second, a.second);
    };
    std::priority_queue<Entry, std::vector<Entry>, decltype(older_last)> lru(older_last);
    ForEachMutableNode([&](Node* n) {
      if (n->is_leaf() && n->ref_count_ == 0) lru.push({n->last_access_, n});
    });
    int64_t evicted = 0;
    while (evicted < max_values && !lru.empty()) {
      Node* leaf = lru.top().second;
      lru.pop();
      const int64_t have = static_cast<int64_t>(leaf->values_.size());
      const int64_t take = std::min(have, max_values - evicted);
      for (int64_t i = have - 1; i >= have - take; --i) {
        on_evict(leaf->values_[i]);
      }
      evicted += take;
      num_values_ -= take;
      if (take < have) {
        leaf->values_.resize(have - take);
        leaf->tokens_.resize((have - take) * granularity_);
        break;  // evicted == max_values
      }
      Node* parent = leaf->parent_;
      parent->children_.erase(parent->children_.find(FirstGranule(*leaf)));  // destroys leaf
      --num_nodes_;
      if (parent->parent_ == nullptr) {
        if (parent->is_leaf()) roots_.erase(roots_.find(*parent->namespace_));  // destroys it
      } else if (parent->is_leaf() && parent->ref_count_ == 0) {
        lru.push({parent->last_access_, parent});
      }
    }
    return evicted;
  }

  // Calls f(const Node&) on every node but the roots, parents before
  // children.
  template <typename F>
  void ForEachNode(F&& f) const {
    const_cast<RadixTree*>(this)->ForEachMutableNode(
        [&f](Node* n) { f(static_cast<const Node&>(*n)); });
  }

  // The namespace of `node`'s tree.
  static const std::string& NamespaceOf(const Node* node) {
    while (node->parent_ != nullptr) node = node->parent_;
    return *node->namespace_;
  }

  // The key spelled by the path root..node.
  static std::vector<Token> PathTokens(const Node* node) {
    std::vector<const Node*> path;
    for (const Node* n = node; n->parent_ != nullptr; n = n->parent_) {
      path.push_back(n);
    }
    std::vector<Token> key;
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      key.insert(key.end(), (*it)->tokens_.begin(), (*it)->tokens_.end());
    }
    return key;
  }

  // Appends the values along the path root..node to *out.
  static void AppendPathValues(const Node* node, std::vector<Value>* out) {
    std::vector<const Node*> path;
    for (const Node* n = node; n->parent_ != nullptr; n = n->parent_) {
      path.push_back(n);
    }
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      out->insert(out->end(), (*it)->values_.begin(), (*it)->values_.end());
    }
  }

  // Verifies the invariants in the file comment; the first violation found
  // comes back as INTERNAL.
  absl::Status CheckInvariants() const {
    int64_t nodes = 0, values = 0, pinned = 0;
    std::vector<const Node*> stack;
    for (const auto& [ns, root] : roots_) {
      if (!root->tokens_.empty() || !root->values_.empty() || root->children_.empty() ||
          root->parent_ != nullptr || root->namespace_ != &ns) {
        return absl::InternalError(absl::StrCat("the root of namespace '", ns,
                                                "' holds tokens, has no children or is linked "
                                                "wrong"));
      }
      stack.push_back(root.get());
    }
    while (!stack.empty()) {
      const Node* n = stack.back();
      stack.pop_back();
      int64_t child_refs = 0;
      for (const auto& [key, child] : n->children_) {
        // An init-capture: C++17 cannot capture a structured binding.
        auto where = [&child = child] {
          return absl::StrCat("node at token offset ",
                              PathTokens(child.get()).size() - child->tokens_.size());
        };
        if (child->parent_ != n) {
          return absl::InternalError(where() + ": wrong parent link");
        }
        if (child->values_.empty() ||
            static_cast<int64_t>(child->tokens_.size()) !=
                granularity_ * static_cast<int64_t>(child->values_.size())) {
          return absl::InternalError(absl::StrCat(where(), ": ", child->tokens_.size(),
                                                  " tokens for ", child->values_.size(),
                                                  " granules"));
        }
        if (absl::MakeConstSpan(key) != FirstGranule(*child)) {
          return absl::InternalError(where() + ": child key != first granule");
        }
        if (n->parent_ != nullptr && n->last_access_ < child->last_access_) {
          return absl::InternalError(where() + ": newer than its parent");
        }
        child_refs += child->ref_count_;
        ++nodes;
        values += static_cast<int64_t>(child->values_.size());
        if (child->ref_count_ > 0) {
          pinned += static_cast<int64_t>(child->values_.size());
        }
        stack.push_back(child.get());
      }
      if (n->parent_ != nullptr && n->ref_count_ != n->direct_pins_ + child_refs) {
        return absl::InternalError(absl::StrCat("ref_count ", n->ref_count_, " != direct pins ",
                                                n->direct_pins_, " + children's ", child_refs));
      }
    }
    if (nodes != num_nodes_ || values != num_values_ || pinned != num_pinned_values_) {
      return absl::InternalError(absl::StrCat(
          "counters (nodes, values, pinned) = (", num_nodes_, ", ", num_values_, ", ",
          num_pinned_values_, "), tree has (", nodes, ", ", values, ", ", pinned, ")"));
    }
    return absl::OkStatus();
  }

 private:
  // Where a walk down the tree for a key stops: `node` ends at `length`
  // matched tokens (null if the namespace has no root); if the match
  // continues into a child without covering it, `partial` is that child and
  // `partial_granules` (>= 1) how much of it matches.
  struct Position {
    Node* node;
    int64_t length;
    Node* partial;
    int64_t partial_granules;
  };

  static void Require(bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "broken invariant: %s\n", what);
      std::abort();
    }
  }

  absl::Span<const Token> FirstGranule(const Node& n) const {
    return absl::MakeConstSpan(n.tokens_.data(), granularity_);
  }

  std::vector<Token> FirstGranuleKey(const Node& n) const {
    return std::vector<Token>(n.tokens_.begin(), n.tokens_.begin() + granularity_);
  }

  Position Walk(absl::string_view ns, absl::Span<const Token> key) const {
    const int64_t g = granularity_;
    const int64_t usable = static_cast<int64_t>(key.size()) / g * g;
    auto root = roots_.find(ns);
    if (root == roots_.end()) return {nullptr, 0, nullptr, 0};
    Node* node = root->second.get();
    int64_t length = 0;
    while (length < usable) {
      auto it = node->children_.find(key.subspan(length, g));
      if (it == node->children_.end()) break;
      Node* child = it->second.get();
      const int64_t run = static_cast<int64_t>(child->tokens_.size());
      int64_t same = g;  // the first granule matched by lookup
      while (same < run && length + same < usable && child->tokens_[same] == key[length + same]) {
        ++same;
      }
      const int64_t granules = same / g;
      if (granules * g < run) return {node, length + granules * g, child, granules};
      node = child;
      length += run;
    }
    return {node, length, nullptr, 0};
  }

  // Cuts `node` after its first `granules` granules: a new node with that
  // head takes node's place under its parent and adopts node (now holding
  // the tail) as its only child. Returns the new node, which inherits
  // node's ref_count and stamp. REQUIRES: 0 < granules < node's granules.
  Node* Split(Node* node, int64_t granules) {
    const int64_t cut = granules * granularity_;
    Node* parent = node->parent_;
    auto upper = std::make_unique<Node>();
    upper->tokens_.assign(node->tokens_.begin(), node->tokens_.begin() + cut);
    upper->values_.assign(node->values_.begin(), node->values_.begin() + granules);
    upper->parent_ = parent;
    upper->ref_count_ = node->ref_count_;
    upper->last_access_ = node->last_access_;
    auto slot = parent->children_.find(FirstGranule(*node));
    std::unique_ptr<Node> lower = std::move(slot->second);
    parent->children_.erase(slot);
    node->tokens_.erase(node->tokens_.begin(), node->tokens_.begin() + cut);
    node->values_.erase(node->values_.begin(), node->values_.begin() + granules);
    node->parent_ = upper.get();
    Node* raw = upper.get();
    raw->children_.emplace(FirstGranuleKey(*node), std::move(lower));
    parent->children_.emplace(FirstGranuleKey(*raw), std::move(upper));
    ++num_nodes_;
    return raw;
  }

  void Touch(Node* node) {
    for (Node* n = node; n->parent_ != nullptr; n = n->parent_) n->last_access_ = clock_;
  }

  template <typename F>
  void ForEachMutableNode(F&& f) {
    std::vector<Node*> stack;
    for (auto& [ns, root] : roots_) stack.push_back(root.get());
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      if (n->parent_ != nullptr) f(n);
      for (auto& [key, child] : n->children_) stack.push_back(child.get());
    }
  }

  const int64_t granularity_;
  // One root per namespace that holds a key. std::map: a root's
  // namespace_ points at its key, which must not move.
  std::map<std::string, std::unique_ptr<Node>, std::less<>> roots_;
  uint64_t clock_ = 0;
  int64_t num_nodes_ = 0;
  int64_t num_values_ = 0;
  int64_t num_pinned_values_ = 0;
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_RADIX_TREE_H_
