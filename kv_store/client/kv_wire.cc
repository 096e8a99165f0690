#include "kv_store/client/kv_wire.h"

#include "absl/strings/str_cat.h"
#include "base/dtype.h"

namespace nanoserve {

v1::KvLayout KvLayoutToProto(const PageLayout& layout) {
  v1::KvLayout proto;
  proto.set_dtype(DtypeName(layout.dtype));
  proto.set_n_layer(layout.n_layer);
  proto.set_n_head(layout.n_head);
  proto.set_head_dim(layout.head_dim);
  proto.set_page_size(layout.page_size);
  return proto;
}

absl::StatusOr<PageLayout> KvLayoutFromProto(const v1::KvLayout& proto) {
  absl::StatusOr<torch::Dtype> dtype = ParseDtype(proto.dtype());
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown KV dtype '", proto.dtype(), "'"));
  }
  PageLayout layout;
  layout.n_layer = proto.n_layer();
  layout.n_head = proto.n_head();
  layout.head_dim = proto.head_dim();
  layout.page_size = proto.page_size();
  layout.dtype = *dtype;
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  return layout;
}

v1::Transport KvTransportToProto(KvTransport transport) {
  switch (transport) {
    case KvTransport::kShm:
      return v1::TRANSPORT_SHM;
    case KvTransport::kCudaIpc:
      return v1::TRANSPORT_CUDA_IPC;
    case KvTransport::kBytes:
      break;
  }
  return v1::TRANSPORT_BYTES;
}

KvTransport KvTransportFromProto(v1::Transport transport) {
  switch (transport) {
    case v1::TRANSPORT_SHM:
      return KvTransport::kShm;
    case v1::TRANSPORT_CUDA_IPC:
      return KvTransport::kCudaIpc;
    default:
      return KvTransport::kBytes;
  }
}

}  // namespace nanoserve
