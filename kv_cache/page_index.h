// What a KV store caches, readable without asking it: a hash table of its
// cached pages, each found by a key of its namespace and every token up to
// the page's end (so a prompt's leading pages are looked up key by key,
// as the radix tree matches them), and beside each page a record of what
// it holds. The store writes it beside its pool; a peer on the same host
// maps it (kv_store.proto's PoolExport) and learns which pages of the pool
// hold a prompt in a few memory reads, where a Match is a round trip that
// costs a lone request 0.3-0.7 ms of thread wake-ups
// (prefill_service/match_cost.h).
//
// Exact, not a guess from hashes: a page is found only where its record
// says it holds the prompt's own tokens of that page, in the prompt's
// namespace, after the page found for the previous page of the prompt (its
// parent in the radix tree), so a key collision costs a lookup a miss,
// never another prompt's K/V. Keys are seeded at random per index (the
// seed is in the header, for peers), so that callers cannot craft them.
//
// Lease-free reads (Find, then Unchanged): a reader copies the pages Find
// gave out of the pool and then checks that none of them was evicted
// meanwhile; the store bumps a page's generation when it evicts it, before
// the page can be handed to a writer, so pages whose generation is
// unchanged after the copy held what Find said throughout it. A reader
// that finds a page changed throws its copy away (and asks the store).
//
// Layout, in 64-bit words (all zeros is an empty index): the header (word
// 0 a version, odd while the writer rebuilds the table; 1 the slot count,
// a power of two; 2 kFormat; 3 the pool's page count; 4 the page size; 5
// the keys' seed; 6-7 reserved); the slots, linear probing, 0 empty, 1 a
// removed page's tombstone, else the top 32 bits of the page's key over
// its page id; then one record per pool page: its generation, its slot's
// value (0 while not indexed), its parent page + 1 (0: the first page of
// its prompt), its namespace's hash, and its tokens, two to a word.
//
// Thread safety: one writer at a time (the store's cache, under its lock);
// readers anywhere, at any time, lock-free (atomic loads of the words).
#ifndef NANOSERVE_KV_CACHE_PAGE_INDEX_H_
#define NANOSERVE_KV_CACHE_PAGE_INDEX_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace nanoserve {

// One key per whole page of `tokens` in namespace `cache_salt`: key i names
// the namespace and tokens [0, (i + 1) * page_size), under `seed`. The same
// in every process. REQUIRES: page_size >= 1.
std::vector<uint64_t> PageKeys(uint64_t seed, absl::string_view cache_salt,
                               absl::Span<const int32_t> tokens, int64_t page_size);

class PageIndex {
 public:
  static constexpr int64_t kHeaderWords = 8;
  static constexpr uint64_t kFormat = 0x6e73706978000002ULL;  // "nspix", 2
  // Words for an index of a pool of `pages` pages of `page_size` tokens:
  // the header, a power of two of slots (at least 4 per page, so probes stay
  // short) and the records.
  static int64_t WordsFor(int64_t pages, int64_t page_size);

  // A view over `words` (WordsFor(pages, page_size) of them, zeroed, or
  // written by a PageIndex of the same geometry before, whose seed it then
  // keeps), not owned.
  PageIndex(uint64_t* words, int64_t n_words, int64_t pages, int64_t page_size, uint64_t seed);

  // Writer side. Pages pages[from..] hold whole pages from..n-1 of `tokens`
  // under `cache_salt` (pages[i - 1] the one before page i); they are
  // recorded and indexed.
  void Add(absl::string_view cache_salt, absl::Span<const int32_t> tokens,
           absl::Span<const int32_t> pages, int64_t from);
  // The page leaves the index and its generation moves on: a reader's copy
  // of it from before is no longer good. Call before the page may be
  // written again. A page not indexed is left alone.
  void Remove(int32_t page);

  int64_t live() const { return live_; }
  uint64_t seed() const { return seed_; }

  // Reader side: the pages that hold the leading whole pages of `tokens`
  // under `cache_salt`, with their generations when read; nullopt when
  // the words are not an index or the writer rebuilt the table meanwhile
  // (unknown). `words` as a peer maps them; n_words bounds what is read.
  struct Found {
    int32_t page = 0;
    uint64_t generation = 0;
  };
  static std::optional<std::vector<Found>> Find(const uint64_t* words, int64_t n_words,
                                                absl::string_view cache_salt,
                                                absl::Span<const int32_t> tokens);
  // Whether none of `found` (Find's, on the same words) was evicted since.
  static bool Unchanged(const uint64_t* words, int64_t n_words, absl::Span<const Found> found);

 private:
  // Slots in use by pages and tombstones, past which the table is rebuilt.
  bool Crowded() const { return (live_ + tombstones_) * 4 > slots_ * 3; }
  // Clears the slots and places the live values again, the version odd
  // while.
  void Rebuild();
  // Puts `value` in the first empty or tombstone slot of its chain.
  bool Place(uint64_t value);
  uint64_t* Record(int32_t page) const { return records_ + page * record_words_; }

  uint64_t* words_;
  uint64_t* slots_base_;
  uint64_t* records_;
  int64_t slots_ = 0;
  int64_t pages_ = 0;
  int64_t page_size_ = 0;
  int64_t record_words_ = 0;
  uint64_t seed_ = 0;
  int64_t live_ = 0;
  int64_t tombstones_ = 0;
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_PAGE_INDEX_H_
