#include "kv_store/client/kv_store_client.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/server_runner.h"
#include "base/status.h"
#include "kv_store/client/kv_wire.h"

namespace nanoserve {

KvStoreClient::KvStoreClient(const KvStoreClientOptions& options)
    : options_(options),
      breaker_(absl::StrCat("kv store ", options.target), options.breaker),
      stub_(v1::KvStore::NewStub(
          MakeChannel(options.target, options.max_message_bytes, options.credentials))) {}

absl::Status KvStoreClient::Finished(const grpc::Status& status, const char* what) {
  absl::Status result = FromGrpcStatus(status, what);
  breaker_.Record(result);
  return result;
}

void KvStoreClient::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(options_.timeout));
}

absl::StatusOr<KvStoreClient::Match> KvStoreClient::MatchPrefix(absl::Span<const int32_t> tokens,
                                                                absl::string_view cache_salt) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::MatchRequest request;
  request.mutable_tokens()->Add(tokens.begin(), tokens.end());
  request.set_cache_salt(std::string(cache_salt));
  v1::MatchResponse response;
  grpc::Status status = stub_->Match(&context, request, &response);
  if (absl::Status failed = Finished(status, "kv store Match"); !failed.ok()) return failed;
  absl::StatusOr<PageLayout> layout = KvLayoutFromProto(response.layout());
  if (!layout.ok()) {
    Release(response.lease_id()).IgnoreError();
    return absl::InternalError(absl::StrCat("kv store Match: ", layout.status().message()));
  }
  return Match{response.matched_tokens(), response.lease_id(), *layout};
}

absl::StatusOr<v1::PutResponse> KvStoreClient::Put(absl::Span<const int32_t> tokens,
                                                   uint64_t base_lease_id, int64_t base_tokens,
                                                   const torch::Tensor& pages,
                                                   const PageLayout& layout,
                                                   const PutScope& scope) {
  const int64_t n_pages = (static_cast<int64_t>(tokens.size()) - base_tokens) / layout.page_size;
  if (!pages.is_cpu() || !pages.is_contiguous() || !pages.sizes().equals(layout.shape(n_pages)) ||
      pages.scalar_type() != layout.dtype) {
    return absl::InvalidArgumentError(absl::StrCat("kv store Put: pages of shape ",
                                                   c10::str(pages.sizes()), " are not ", n_pages,
                                                   " CPU pages of ", layout.ToString()));
  }
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::PutResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::PutRequest>> writer = stub_->Put(&context, &response);
  v1::PutRequest header;
  header.mutable_header()->mutable_tokens()->Add(tokens.begin(), tokens.end());
  header.mutable_header()->set_base_lease_id(base_lease_id);
  header.mutable_header()->set_base_tokens(base_tokens);
  *header.mutable_header()->mutable_layout() = KvLayoutToProto(layout);
  header.mutable_header()->set_cache_salt(scope.cache_salt);
  header.mutable_header()->set_lease_holder(scope.lease_holder);
  bool ok = writer->Write(header);
  const char* data = static_cast<const char*>(pages.data_ptr());
  const int64_t total = pages.numel() * pages.element_size();
  for (int64_t offset = 0; ok && offset < total; offset += options_.chunk_bytes) {
    v1::PutRequest chunk;
    chunk.mutable_chunk()->set_offset(offset);
    chunk.mutable_chunk()->set_data(data + offset, std::min(options_.chunk_bytes, total - offset));
    ok = writer->Write(chunk);
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (absl::Status failed = Finished(status, "kv store Put"); !failed.ok()) return failed;
  return response;
}

absl::StatusOr<KvStoreClient::Fetched> KvStoreClient::Fetch(uint64_t lease_id) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::FetchRequest request;
  request.set_lease_id(lease_id);
  request.set_transport(v1::TRANSPORT_BYTES);
  request.set_max_chunk_bytes(options_.chunk_bytes);
  std::unique_ptr<grpc::ClientReader<v1::FetchResponse>> reader = stub_->Fetch(&context, request);
  v1::FetchResponse message;
  v1::FetchHeader header;
  PageLayout layout;
  bool have_header = false;
  torch::Tensor pages;  // a run of pages: the chunks land here directly
  char* data = nullptr;
  int64_t received = 0;
  absl::Status bad;
  while (reader->Read(&message)) {
    if (message.has_header() && !have_header) {
      header = message.header();
      absl::StatusOr<PageLayout> parsed = KvLayoutFromProto(header.layout());
      // pages * bytes_per_page must not overflow: a header claiming more
      // pages than int64 bytes can hold is malformed, not a wrapped size.
      int64_t claimed_bytes = 0;
      have_header =
          parsed.ok() && header.pages() >= 0 &&
          !__builtin_mul_overflow(header.pages(), parsed->bytes_per_page(), &claimed_bytes) &&
          header.total_bytes() == claimed_bytes;
      absl::StatusOr<torch::Tensor> allocated;
      if (have_header) {
        layout = *parsed;
        allocated = EmptyPages(layout, header.pages(), torch::kCPU);
        have_header = allocated.ok();
      }
      if (!have_header) {
        bad = absl::InternalError("kv store Fetch: malformed header");
      } else {
        pages = *std::move(allocated);
        data = static_cast<char*>(pages.data_ptr());
      }
    } else if (message.has_chunk() && have_header &&
               static_cast<int64_t>(message.chunk().offset()) == received &&
               received + static_cast<int64_t>(message.chunk().data().size()) <=
                   header.total_bytes()) {
      std::memcpy(data + received, message.chunk().data().data(), message.chunk().data().size());
      received += static_cast<int64_t>(message.chunk().data().size());
    } else if (bad.ok()) {
      bad = absl::InternalError("kv store Fetch: out-of-order or unexpected message");
    }
    if (!bad.ok()) context.TryCancel();
  }
  grpc::Status status = reader->Finish();
  if (!bad.ok()) return bad;
  if (absl::Status failed = Finished(status, "kv store Fetch"); !failed.ok()) return failed;
  if (!have_header || received != header.total_bytes()) {
    return absl::InternalError("kv store Fetch: stream ended early");
  }
  Fetched fetched;
  fetched.pages = std::move(pages);
  fetched.layout = layout;
  fetched.tokens = header.tokens();
  fetched.bytes = header.total_bytes();
  return fetched;
}

absl::Status KvStoreClient::Release(uint64_t lease_id) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ReleaseRequest request;
  request.set_lease_id(lease_id);
  v1::ReleaseResponse response;
  return Finished(stub_->Release(&context, request, &response), "kv store Release");
}

absl::StatusOr<std::vector<uint64_t>> KvStoreClient::Renew(const std::vector<uint64_t>& lease_ids) {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::RenewLeaseRequest request;
  request.mutable_lease_ids()->Add(lease_ids.begin(), lease_ids.end());
  v1::RenewLeaseResponse response;
  grpc::Status status = stub_->RenewLease(&context, request, &response);
  if (absl::Status failed = Finished(status, "kv store RenewLease"); !failed.ok()) return failed;
  return std::vector<uint64_t>(response.unknown_lease_ids().begin(),
                               response.unknown_lease_ids().end());
}

absl::StatusOr<v1::StatsResponse> KvStoreClient::Stats() {
  if (absl::Status refused = breaker_.Allow(); !refused.ok()) return refused;
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::StatsResponse response;
  grpc::Status status = stub_->Stats(&context, v1::StatsRequest(), &response);
  if (absl::Status failed = Finished(status, "kv store Stats"); !failed.ok()) return failed;
  return response;
}

}  // namespace nanoserve
