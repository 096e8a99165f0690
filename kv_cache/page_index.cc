#include "kv_cache/page_index.h"

#include <algorithm>

#include "base/stable_hash.h"

namespace nanoserve {
namespace {

constexpr uint64_t kEmpty = 0;
constexpr uint64_t kTombstone = 1;

uint64_t Load(const uint64_t* word) { return __atomic_load_n(word, __ATOMIC_RELAXED); }
void Store(uint64_t* word, uint64_t value) { __atomic_store_n(word, value, __ATOMIC_RELAXED); }

// Keys never collide with the empty and tombstone markers.
uint64_t AsKey(uint64_t hash) { return hash < 2 ? hash + 2 : hash; }

}  // namespace

std::vector<uint64_t> PageKeys(absl::string_view cache_salt, absl::Span<const int32_t> tokens,
                               int64_t page_size) {
  uint64_t h = SplitMix64(cache_salt.size());
  for (unsigned char c : cache_salt) h = SplitMix64(h ^ c);
  std::vector<uint64_t> keys;
  const int64_t pages = static_cast<int64_t>(tokens.size()) / page_size;
  keys.reserve(static_cast<size_t>(pages));
  for (int64_t p = 0; p < pages; ++p) {
    for (int64_t i = p * page_size; i < (p + 1) * page_size; ++i) {
      h = SplitMix64(h ^ static_cast<uint32_t>(tokens[i]));
    }
    keys.push_back(AsKey(h));
  }
  return keys;
}

int64_t PageIndex::WordsFor(int64_t pages) {
  int64_t slots = 64;
  while (slots < 4 * pages) slots *= 2;
  return kHeaderWords + slots;
}

PageIndex::PageIndex(uint64_t* words, int64_t n_words) : words_(words) {
  int64_t slots = 1;
  while (slots * 2 <= n_words - kHeaderWords) slots *= 2;
  slots_ = slots;
  slots_base_ = words + kHeaderWords;
  Store(&words_[1], static_cast<uint64_t>(slots_));
  for (int64_t i = 0; i < slots_; ++i) {  // counts what a restored table holds
    const uint64_t v = Load(&slots_base_[i]);
    if (v == kTombstone) ++tombstones_;
    if (v > kTombstone) ++live_;
  }
}

bool PageIndex::Place(uint64_t key) {
  const uint64_t mask = static_cast<uint64_t>(slots_) - 1;
  for (int64_t probe = 0; probe < slots_; ++probe) {
    uint64_t* slot = &slots_base_[(key + static_cast<uint64_t>(probe)) & mask];
    const uint64_t v = Load(slot);
    if (v == kEmpty || v == kTombstone) {
      if (v == kTombstone) --tombstones_;
      __atomic_store_n(slot, key, __ATOMIC_RELEASE);
      ++live_;
      return true;
    }
  }
  return false;
}

void PageIndex::Add(uint64_t key) {
  key = AsKey(key);
  if (Crowded()) Rebuild();
  Place(key);
}

void PageIndex::Remove(uint64_t key) {
  key = AsKey(key);
  const uint64_t mask = static_cast<uint64_t>(slots_) - 1;
  for (int64_t probe = 0; probe < slots_; ++probe) {
    uint64_t* slot = &slots_base_[(key + static_cast<uint64_t>(probe)) & mask];
    const uint64_t v = Load(slot);
    if (v == kEmpty) return;
    if (v == key) {
      Store(slot, kTombstone);
      --live_;
      ++tombstones_;
      return;
    }
  }
}

void PageIndex::Rebuild() {
  std::vector<uint64_t> keys;
  keys.reserve(static_cast<size_t>(live_));
  for (int64_t i = 0; i < slots_; ++i) {
    const uint64_t v = Load(&slots_base_[i]);
    if (v > kTombstone) keys.push_back(v);
  }
  const uint64_t version = Load(&words_[0]);
  Store(&words_[0], version + 1);  // odd: readers answer "unknown"
  __atomic_thread_fence(__ATOMIC_RELEASE);
  for (int64_t i = 0; i < slots_; ++i) Store(&slots_base_[i], kEmpty);
  live_ = 0;
  tombstones_ = 0;
  for (uint64_t key : keys) Place(key);
  __atomic_store_n(&words_[0], version + 2, __ATOMIC_RELEASE);
}

int64_t PageIndex::LeadingPresent(const uint64_t* words, int64_t n_words,
                                  absl::Span<const uint64_t> keys) {
  if (n_words <= kHeaderWords) return -1;
  const uint64_t before = __atomic_load_n(&words[0], __ATOMIC_ACQUIRE);
  if (before % 2 == 1) return -1;
  const int64_t slots = static_cast<int64_t>(Load(&words[1]));
  // A slot count that is not a power of two within the words: not a table.
  if (slots < 1 || (slots & (slots - 1)) != 0 || slots > n_words - kHeaderWords) return -1;
  const uint64_t* base = words + kHeaderWords;
  const uint64_t mask = static_cast<uint64_t>(slots) - 1;
  int64_t present = 0;
  for (uint64_t key : keys) {
    key = AsKey(key);
    bool found = false;
    for (int64_t probe = 0; probe < slots; ++probe) {
      const uint64_t v =
          __atomic_load_n(&base[(key + static_cast<uint64_t>(probe)) & mask], __ATOMIC_ACQUIRE);
      if (v == kEmpty) break;
      if (v == key) {
        found = true;
        break;
      }
    }
    if (!found) break;
    ++present;
  }
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  if (Load(&words[0]) != before) return -1;
  return present;
}

}  // namespace nanoserve
