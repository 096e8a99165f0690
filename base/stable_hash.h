// Hashes whose values are the same in every process and build (unlike
// absl::Hash, seeded per process): for what one process computes and
// another compares, such as the KV store's page index (kv_cache/page_index.h).
//
// Thread safety: pure functions.
#ifndef NANOSERVE_BASE_STABLE_HASH_H_
#define NANOSERVE_BASE_STABLE_HASH_H_

#include <cstdint>

namespace nanoserve {

// SplitMix64's finaliser: spreads nearby integers over all 64 bits.
inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_STABLE_HASH_H_
