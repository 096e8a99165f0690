#include "kv_cache/shared_prefix_groups.h"

#include <algorithm>
#include <cstddef>
#include <map>
#include <utility>

namespace nanoserve {

std::vector<SharedPrefixGroup> SharedPrefixGroups(
    absl::Span<const std::vector<int32_t>* const> pages, absl::Span<const int64_t> lengths,
    const SharedPrefixGroupLimits& limits) {
  std::map<int32_t, std::vector<int64_t>> by_first;
  for (size_t r = 0; r < pages.size() && r < lengths.size(); ++r) {
    if (!pages[r]->empty()) by_first[pages[r]->front()].push_back(static_cast<int64_t>(r));
  }
  std::vector<SharedPrefixGroup> groups;
  for (const auto& [page, members] : by_first) {
    if (members.size() < 2) continue;
    const std::vector<int32_t>& lead = *pages[members[0]];
    int64_t common = static_cast<int64_t>(lead.size());
    for (int64_t r : members) {
      const std::vector<int32_t>& own = *pages[r];
      const int64_t most = std::min<int64_t>(common, static_cast<int64_t>(own.size()));
      common = std::mismatch(lead.begin(), lead.begin() + most, own.begin()).first - lead.begin();
      common = std::min(common, lengths[r] / limits.page_size);  // before the page it writes
    }
    const int64_t keys = common * limits.page_size;
    if (keys < std::max<int64_t>(limits.min_keys, 1)) continue;
    for (size_t i = 0; i + 1 < members.size();) {
      if (static_cast<int64_t>(groups.size()) >= limits.max_groups) return groups;
      const size_t take =
          std::min<size_t>(static_cast<size_t>(limits.max_rows), members.size() - i);
      if (take < 2) break;
      SharedPrefixGroup group;
      group.keys = keys;
      group.rows.assign(members.begin() + static_cast<std::ptrdiff_t>(i),
                        members.begin() + static_cast<std::ptrdiff_t>(i + take));
      groups.push_back(std::move(group));
      i += take;
    }
  }
  return groups;
}

}  // namespace nanoserve
