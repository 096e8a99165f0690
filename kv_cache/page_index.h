// What a KV store caches, readable without asking it: a hash set of its
// cached pages, each named by a key of its namespace and every token up to
// the page's end (so a prompt's leading pages are looked up key by key,
// as the radix tree matches them). The store writes it beside its pool;
// a peer on the same host maps it (kv_store.proto's PoolExport) and
// learns how much of a prompt the store holds in a few memory reads, where
// a Match is a round trip that costs a lone request 0.3-0.7 ms of thread
// wake-ups (prefill_service/match_cost.h). A prefill then asks the store
// only for batches with pages to reuse: a cold prompt goes straight to
// the forward pass.
//
// The set is a hint, never the truth: a Match still decides what is
// reused and pins it. A key may be read while the store adds or removes
// it (seen or not), and a lookup that overlaps a rebuild of the table
// answers "unknown" (-1), never a wrong count from a half-written table.
//
// Layout, in 64-bit words (all zeros is an empty set): word 0 a version,
// odd while the writer rebuilds; word 1 the slot count (a power of two);
// words 2-7 reserved; then the slots, linear probing: 0 empty, 1 a removed
// key's tombstone, else a key (keys are never 0 or 1).
//
// Thread safety: one writer at a time (the store's cache, under its lock);
// readers anywhere, at any time, lock-free (atomic loads of the words).
#ifndef NANOSERVE_KV_CACHE_PAGE_INDEX_H_
#define NANOSERVE_KV_CACHE_PAGE_INDEX_H_

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace nanoserve {

// One key per whole page of `tokens` in namespace `cache_salt`: key i names
// the namespace and tokens [0, (i + 1) * page_size). The same in every
// process. REQUIRES: page_size >= 1.
std::vector<uint64_t> PageKeys(absl::string_view cache_salt, absl::Span<const int32_t> tokens,
                               int64_t page_size);

class PageIndex {
 public:
  static constexpr int64_t kHeaderWords = 8;
  // Words for an index of up to `pages` keys: the header and a power of
  // two of slots, at least 4 per page (so probes stay short).
  static int64_t WordsFor(int64_t pages);

  // A view over `words` (WordsFor(...) of them, zeroed or written by a
  // PageIndex before), not owned. The writer's constructor sets the slot
  // count.
  PageIndex(uint64_t* words, int64_t n_words);

  // Writer side. Add may hold a key twice (a 64-bit collision of two
  // pages); Remove takes one of them away. A key that finds no slot is
  // dropped (a lookup then misses it: only a match is lost).
  void Add(uint64_t key);
  void Remove(uint64_t key);

  // Reader side: how many of `keys`, from the first, are in the set; -1
  // when the writer rebuilt the table meanwhile (unknown). `words` as a
  // peer maps them; n_words bounds what is read.
  static int64_t LeadingPresent(const uint64_t* words, int64_t n_words,
                                absl::Span<const uint64_t> keys);

  int64_t live() const { return live_; }

 private:
  // Slots in use by keys and tombstones, past which the table is rebuilt.
  bool Crowded() const { return (live_ + tombstones_) * 4 > slots_ * 3; }
  // Clears the slots and adds the live keys again, the version odd while.
  void Rebuild();
  // Puts `key` in the first empty or tombstone slot of its chain.
  bool Place(uint64_t key);

  uint64_t* words_;
  uint64_t* slots_base_;
  int64_t slots_ = 0;
  int64_t live_ = 0;
  int64_t tombstones_ = 0;
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_PAGE_INDEX_H_
