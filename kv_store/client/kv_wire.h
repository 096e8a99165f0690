// The KV store's wire format in proto terms. Page bytes on the wire are
// runs of pages exactly as kv_store/page_layout.h lays them out (page after
// page, each C-order (n_layer, 2, n_head, page_size, head_dim)); this file
// only converts the layout between its proto (v1::KvLayout) and PageLayout.
#ifndef NANOSERVE_KV_STORE_CLIENT_KV_WIRE_H_
#define NANOSERVE_KV_STORE_CLIENT_KV_WIRE_H_

#include "absl/status/statusor.h"
#include "kv_cache/page_layout.h"
#include "kv_cache/shared_memory.h"
#include "nanoserve/v1/common.pb.h"
#include "nanoserve/v1/kv_store.pb.h"

namespace nanoserve {

v1::KvLayout KvLayoutToProto(const PageLayout& layout);
// INVALID_ARGUMENT for an unknown dtype or a layout PageLayout::Validate
// refuses.
absl::StatusOr<PageLayout> KvLayoutFromProto(const v1::KvLayout& layout);

// The data plane's transport in proto terms (nanoserve/v1/kv_store.proto);
// an unknown value reads as bytes.
v1::Transport KvTransportToProto(KvTransport transport);
KvTransport KvTransportFromProto(v1::Transport transport);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_KV_WIRE_H_
