// The KV store's wire format in proto terms. Page bytes on the wire are
// runs of pages exactly as kv_store/page_layout.h lays them out (page after
// page, each C-order (n_layer, 2, n_head, page_size, head_dim)); this file
// only converts the layout between its proto (v1::KvLayout) and PageLayout.
#ifndef NANOSERVE_KV_STORE_CLIENT_KV_WIRE_H_
#define NANOSERVE_KV_STORE_CLIENT_KV_WIRE_H_

#include "absl/status/statusor.h"
#include "kv_cache/page_layout.h"
#include "nanoserve/v1/common.pb.h"

namespace nanoserve {

v1::KvLayout KvLayoutToProto(const PageLayout& layout);
// INVALID_ARGUMENT for an unknown dtype or a layout PageLayout::Validate
// refuses.
absl::StatusOr<PageLayout> KvLayoutFromProto(const v1::KvLayout& layout);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_KV_WIRE_H_
