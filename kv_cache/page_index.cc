#include "kv_cache/page_index.h"

#include <algorithm>

#include "base/stable_hash.h"

namespace nanoserve {
namespace {

constexpr uint64_t kEmpty = 0;
constexpr uint64_t kTombstone = 1;
// A record: generation, slot value, parent + 1, namespace hash, tokens.
constexpr int64_t kRecordHead = 4;

uint64_t Load(const uint64_t* word) { return __atomic_load_n(word, __ATOMIC_RELAXED); }
uint64_t Acquire(const uint64_t* word) { return __atomic_load_n(word, __ATOMIC_ACQUIRE); }
void Store(uint64_t* word, uint64_t value) { __atomic_store_n(word, value, __ATOMIC_RELAXED); }

int64_t RecordWords(int64_t page_size) { return kRecordHead + (page_size + 1) / 2; }

// The chain over the namespace under `seed`: PageKeys' start.
uint64_t SaltChain(uint64_t seed, absl::string_view cache_salt) {
  uint64_t h = SplitMix64(cache_salt.size() ^ seed);
  for (unsigned char c : cache_salt) h = SplitMix64(h ^ c);
  return h;
}

// The namespace's hash under `seed`, never 0.
uint64_t NamespaceHash(uint64_t seed, absl::string_view cache_salt) {
  const uint64_t h = SaltChain(seed, cache_salt);
  return h == 0 ? 1 : h;
}

// The geometry a header describes, where it fits `n_words` words.
struct Geometry {
  int64_t slots, pages, page_size, record_words;
  uint64_t seed;
  const uint64_t* slot_base(const uint64_t* words) const { return words + PageIndex::kHeaderWords; }
  const uint64_t* record(const uint64_t* words, int64_t page) const {
    return slot_base(words) + slots + page * record_words;
  }
};
std::optional<Geometry> ReadGeometry(const uint64_t* words, int64_t n_words) {
  if (n_words <= PageIndex::kHeaderWords || Acquire(&words[2]) != PageIndex::kFormat) {
    return std::nullopt;
  }
  Geometry g;
  g.slots = static_cast<int64_t>(Load(&words[1]));
  g.pages = static_cast<int64_t>(Load(&words[3]));
  g.page_size = static_cast<int64_t>(Load(&words[4]));
  g.seed = Load(&words[5]);
  if (g.slots < 1 || (g.slots & (g.slots - 1)) != 0 || g.pages < 0 || g.page_size < 1 ||
      g.page_size > (int64_t{1} << 20) || g.slots > n_words) {
    return std::nullopt;
  }
  g.record_words = RecordWords(g.page_size);
  if (g.pages > (n_words - PageIndex::kHeaderWords - g.slots) / g.record_words) return std::nullopt;
  return g;
}

// A slot's value: the key's top 32 bits (never 0, so never a marker) over
// the page id.
uint64_t SlotValue(uint64_t key, int32_t page) {
  uint64_t top = key >> 32;
  if (top == 0) top = 1;
  return (top << 32) | static_cast<uint32_t>(page);
}
uint64_t SlotStart(uint64_t value, int64_t slots) {
  return SplitMix64(value >> 32) & (static_cast<uint64_t>(slots) - 1);
}

// Tokens [0, n) packed two to a word.
uint64_t TokenWord(absl::Span<const int32_t> tokens, int64_t w) {
  const uint64_t lo = static_cast<uint32_t>(tokens[2 * w]);
  const uint64_t hi = 2 * w + 1 < static_cast<int64_t>(tokens.size())
                          ? static_cast<uint32_t>(tokens[2 * w + 1])
                          : 0;
  return lo | (hi << 32);
}

}  // namespace

std::vector<uint64_t> PageKeys(uint64_t seed, absl::string_view cache_salt,
                               absl::Span<const int32_t> tokens, int64_t page_size) {
  uint64_t h = SaltChain(seed, cache_salt);
  std::vector<uint64_t> keys;
  const int64_t pages = static_cast<int64_t>(tokens.size()) / page_size;
  keys.reserve(static_cast<size_t>(pages));
  for (int64_t p = 0; p < pages; ++p) {
    for (int64_t i = p * page_size; i < (p + 1) * page_size; ++i) {
      h = SplitMix64(h ^ static_cast<uint32_t>(tokens[i]));
    }
    keys.push_back(h);
  }
  return keys;
}

int64_t PageIndex::WordsFor(int64_t pages, int64_t page_size) {
  int64_t slots = 64;
  while (slots < 4 * pages) slots *= 2;
  return kHeaderWords + slots + pages * RecordWords(page_size);
}

PageIndex::PageIndex(uint64_t* words, int64_t n_words, int64_t pages, int64_t page_size,
                     uint64_t seed)
    : words_(words), pages_(pages), page_size_(page_size), record_words_(RecordWords(page_size)) {
  int64_t slots = 1;
  while (kHeaderWords + slots * 2 + pages * record_words_ <= n_words) slots *= 2;
  slots_ = slots;
  slots_base_ = words + kHeaderWords;
  records_ = slots_base_ + slots_;
  const bool restored = Load(&words_[2]) == kFormat &&
                        Load(&words_[3]) == static_cast<uint64_t>(pages) &&
                        Load(&words_[4]) == static_cast<uint64_t>(page_size) &&
                        Load(&words_[1]) == static_cast<uint64_t>(slots_);
  seed_ = restored ? Load(&words_[5]) : seed;
  Store(&words_[1], static_cast<uint64_t>(slots_));
  Store(&words_[3], static_cast<uint64_t>(pages));
  Store(&words_[4], static_cast<uint64_t>(page_size));
  Store(&words_[5], seed_);
  __atomic_store_n(&words_[2], kFormat, __ATOMIC_RELEASE);
  for (int64_t i = 0; i < slots_; ++i) {  // counts what a restored table holds
    const uint64_t v = Load(&slots_base_[i]);
    if (v == kTombstone) ++tombstones_;
    if (v > kTombstone) ++live_;
  }
}

bool PageIndex::Place(uint64_t value) {
  const uint64_t mask = static_cast<uint64_t>(slots_) - 1;
  const uint64_t start = SlotStart(value, slots_);
  for (int64_t probe = 0; probe < slots_; ++probe) {
    uint64_t* slot = &slots_base_[(start + static_cast<uint64_t>(probe)) & mask];
    const uint64_t v = Load(slot);
    if (v == kEmpty || v == kTombstone) {
      if (v == kTombstone) --tombstones_;
      // The page's record, written before, is published with it.
      __atomic_store_n(slot, value, __ATOMIC_RELEASE);
      ++live_;
      return true;
    }
  }
  return false;
}

void PageIndex::Add(absl::string_view cache_salt, absl::Span<const int32_t> tokens,
                    absl::Span<const int32_t> pages, int64_t from) {
  const std::vector<uint64_t> keys = PageKeys(seed_, cache_salt, tokens, page_size_);
  const uint64_t ns = NamespaceHash(seed_, cache_salt);
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(keys.size()), pages.size());
  for (int64_t i = std::max<int64_t>(from, 0); i < n; ++i) {
    const int32_t page = pages[i];
    if (page < 0 || page >= pages_) continue;
    uint64_t* record = Record(page);
    if (Load(&record[1]) != kEmpty) Remove(page);  // indexed under another prompt before
    const uint64_t value = SlotValue(keys[i], page);
    Store(&record[1], value);
    Store(&record[2], i > 0 ? static_cast<uint64_t>(pages[i - 1]) + 1 : 0);
    Store(&record[3], ns);
    const absl::Span<const int32_t> own = tokens.subspan(i * page_size_, page_size_);
    for (int64_t w = 0; w < (page_size_ + 1) / 2; ++w) {
      Store(&record[kRecordHead + w], TokenWord(own, w));
    }
    if (Crowded()) Rebuild();
    if (!Place(value)) Store(&record[1], kEmpty);  // no slot: a lookup misses it
  }
}

void PageIndex::Remove(int32_t page) {
  if (page < 0 || page >= pages_) return;
  uint64_t* record = Record(page);
  const uint64_t value = Load(&record[1]);
  if (value == kEmpty) return;
  const uint64_t mask = static_cast<uint64_t>(slots_) - 1;
  const uint64_t start = SlotStart(value, slots_);
  for (int64_t probe = 0; probe < slots_; ++probe) {
    uint64_t* slot = &slots_base_[(start + static_cast<uint64_t>(probe)) & mask];
    const uint64_t v = Load(slot);
    if (v == kEmpty) break;
    if (v == value) {
      __atomic_store_n(slot, kTombstone, __ATOMIC_SEQ_CST);
      --live_;
      ++tombstones_;
      break;
    }
  }
  Store(&record[1], kEmpty);
  // After the tombstone: a reader that sees the new generation sees the
  // page gone; one that read the old one fails Unchanged.
  __atomic_store_n(&record[0], Load(&record[0]) + 1, __ATOMIC_SEQ_CST);
}

void PageIndex::Rebuild() {
  std::vector<uint64_t> values;
  values.reserve(static_cast<size_t>(live_));
  for (int64_t i = 0; i < slots_; ++i) {
    const uint64_t v = Load(&slots_base_[i]);
    if (v > kTombstone) values.push_back(v);
  }
  const uint64_t version = Load(&words_[0]);
  Store(&words_[0], version + 1);  // odd: readers answer "unknown"
  __atomic_thread_fence(__ATOMIC_RELEASE);
  for (int64_t i = 0; i < slots_; ++i) Store(&slots_base_[i], kEmpty);
  live_ = 0;
  tombstones_ = 0;
  for (uint64_t value : values) Place(value);
  __atomic_store_n(&words_[0], version + 2, __ATOMIC_RELEASE);
}

std::optional<std::vector<PageIndex::Found>> PageIndex::Find(const uint64_t* words, int64_t n_words,
                                                             absl::string_view cache_salt,
                                                             absl::Span<const int32_t> tokens) {
  // A geometry that does not fit the words: not an index.
  const std::optional<Geometry> g = ReadGeometry(words, n_words);
  if (!g.has_value()) return std::nullopt;
  const uint64_t before = Acquire(&words[0]);
  if (before % 2 == 1) return std::nullopt;
  const int64_t slots = g->slots, pages = g->pages, page_size = g->page_size;
  const uint64_t* base = g->slot_base(words);
  const uint64_t mask = static_cast<uint64_t>(slots) - 1;
  const std::vector<uint64_t> keys = PageKeys(g->seed, cache_salt, tokens, page_size);
  const uint64_t ns = NamespaceHash(g->seed, cache_salt);
  std::vector<Found> found;
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint64_t top = SlotValue(keys[i], 0) >> 32;
    const uint64_t parent = i > 0 ? static_cast<uint64_t>(found.back().page) + 1 : 0;
    const absl::Span<const int32_t> own = tokens.subspan(i * page_size, page_size);
    const uint64_t start = SlotStart(top << 32, slots);
    bool accepted = false;
    for (int64_t probe = 0; probe < slots && !accepted; ++probe) {
      const uint64_t* slot = &base[(start + static_cast<uint64_t>(probe)) & mask];
      const uint64_t v = Acquire(slot);
      if (v == kEmpty) break;
      if (v == kTombstone || v >> 32 != top) continue;
      const int64_t page = static_cast<int64_t>(v & 0xffffffffu);
      if (page >= pages) continue;
      const uint64_t* record = g->record(words, page);
      const uint64_t generation = Acquire(&record[0]);
      bool same = Load(&record[1]) == v && Load(&record[2]) == parent && Load(&record[3]) == ns;
      for (int64_t w = 0; same && w < (page_size + 1) / 2; ++w) {
        same = Load(&record[kRecordHead + w]) == TokenWord(own, w);
      }
      // What was read is the page's record of that generation, still indexed.
      __atomic_thread_fence(__ATOMIC_ACQUIRE);
      if (same && Load(&record[0]) == generation && Load(slot) == v) {
        found.push_back({static_cast<int32_t>(page), generation});
        accepted = true;
      }
    }
    if (!accepted) break;
  }
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  if (Load(&words[0]) != before) return std::nullopt;
  return found;
}

bool PageIndex::Unchanged(const uint64_t* words, int64_t n_words, absl::Span<const Found> found) {
  const std::optional<Geometry> g = ReadGeometry(words, n_words);
  if (!g.has_value()) return false;
  for (const Found& f : found) {
    if (f.page < 0 || f.page >= g->pages) return false;
    if (Acquire(g->record(words, f.page)) != f.generation) return false;
  }
  return true;
}

}  // namespace nanoserve
