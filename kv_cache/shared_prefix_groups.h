// Which rows of a batch can attend a shared prefix once, together (the
// decode step's shared-prefix, or cascade, attention): rows whose block
// tables begin with the same pool pages hold the same K/V there (prefix
// reuse attaches a cached prefix to a row in place), so their queries can
// read those pages once for the group.
#ifndef NANOSERVE_KV_CACHE_SHARED_PREFIX_GROUPS_H_
#define NANOSERVE_KV_CACHE_SHARED_PREFIX_GROUPS_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace nanoserve {

struct SharedPrefixGroup {
  int64_t keys = 0;           // positions 0..keys-1: whole pages every row holds alike
  std::vector<int64_t> rows;  // >= 2, in order
};

struct SharedPrefixGroupLimits {
  int64_t page_size = 16;
  int64_t max_rows = 32;   // rows a group; more rows sharing pages make several groups
  int64_t max_groups = 8;  // groups past it are not made (their rows attend alone)
  int64_t min_keys = 64;   // fewer shared keys: no group
};

// The groups of rows 0..n-1 (pages[r]: row r's block table, lengths[r]:
// the tokens it holds, the next one to be written at position lengths[r]):
// rows with the same first page, each group's keys the whole pages all its
// rows hold alike and before each row's position lengths[r] (the page a row
// writes into is never shared). Groups in order of their first page; a row
// left alone after splitting into groups of max_rows is in none.
std::vector<SharedPrefixGroup> SharedPrefixGroups(
    absl::Span<const std::vector<int32_t>* const> pages, absl::Span<const int64_t> lengths,
    const SharedPrefixGroupLimits& limits);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_SHARED_PREFIX_GROUPS_H_
