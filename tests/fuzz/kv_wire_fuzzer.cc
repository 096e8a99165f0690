// Fuzzes the KV store's wire format: a v1::KvLayout as a peer sends it
// (kv_store/client/kv_wire.h) and a run of page bytes for that layout
// (kv_cache/page_layout.h). Input: one byte n, then n bytes of serialized
// KvLayout, then the page bytes.
//   - KvLayoutFromProto gives INVALID_ARGUMENT or a layout that Validate
//     accepts, whose size computations stay in range (UBSan reports a signed
//     overflow), and that survives KvLayoutToProto -> KvLayoutFromProto;
//   - PagesFromBytes gives INVALID_ARGUMENT unless the bytes are whole
//     pages, and otherwise (n, n_layer, 2, n_head, page_size, head_dim) pages
//     holding exactly those bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <google/protobuf/stubs/logging.h>
#include <torch/types.h>

#include "absl/strings/string_view.h"
#include "kv_cache/page_layout.h"
#include "kv_store/client/kv_wire.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size - 1 < data[0]) return 0;
  const size_t proto_size = data[0];
  // Protobuf logs each string field that is not UTF-8; inputs do that often.
  const google::protobuf::LogSilencer quiet;
  nanoserve::v1::KvLayout proto;
  if (!proto.ParseFromArray(data + 1, static_cast<int>(proto_size))) return 0;
  const absl::string_view bytes(reinterpret_cast<const char*>(data) + 1 + proto_size,
                                size - 1 - proto_size);

  absl::StatusOr<nanoserve::PageLayout> layout = nanoserve::KvLayoutFromProto(proto);
  if (!layout.ok()) {
    FUZZ_CHECK(layout.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(layout->Validate().ok());
  absl::StatusOr<nanoserve::PageLayout> again =
      nanoserve::KvLayoutFromProto(nanoserve::KvLayoutToProto(*layout));
  FUZZ_CHECK(again.ok() && *again == *layout);
  const int64_t per_page = layout->bytes_per_page();
  FUZZ_CHECK(per_page > 0);

  absl::StatusOr<torch::Tensor> pages = nanoserve::PagesFromBytes(*layout, bytes);
  const bool whole_pages = static_cast<int64_t>(bytes.size()) % per_page == 0;
  if (!pages.ok()) {
    FUZZ_CHECK(!whole_pages && pages.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(whole_pages);
  const int64_t n = static_cast<int64_t>(bytes.size()) / per_page;
  FUZZ_CHECK(pages->sizes() == c10::IntArrayRef(layout->shape(n)));
  FUZZ_CHECK(pages->scalar_type() == layout->dtype && pages->is_contiguous());
  FUZZ_CHECK(pages->nbytes() == bytes.size());
  FUZZ_CHECK(bytes.empty() || std::memcmp(pages->data_ptr(), bytes.data(), bytes.size()) == 0);
  return 0;
}
