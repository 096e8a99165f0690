#include "kv_store/client/kv_store_client.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kv_store/client/kv_wire.h"
#include "rpc/server_runner.h"
#include "rpc/status.h"

namespace nanoserve {

KvStoreClient::KvStoreClient(const KvStoreClientOptions& options)
    : options_(options),
      stub_(v1::KvStore::NewStub(MakeChannel(options.target, options.max_message_bytes))) {}

void KvStoreClient::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(options_.timeout));
}

absl::StatusOr<KvStoreClient::Match> KvStoreClient::MatchPrefix(absl::Span<const int32_t> tokens) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::MatchRequest request;
  request.mutable_tokens()->Add(tokens.begin(), tokens.end());
  v1::MatchResponse response;
  grpc::Status status = stub_->Match(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status, "kv store Match");
  Match match;
  match.matched_tokens = response.matched_tokens();
  match.lease_id = response.lease_id();
  match.layout = response.layout();
  return match;
}

absl::StatusOr<v1::PutResponse> KvStoreClient::Put(absl::Span<const int32_t> tokens,
                                                   uint64_t base_lease_id, int64_t base_tokens,
                                                   const torch::Tensor& kv,
                                                   const v1::KvLayout& layout) {
  auto pages = KvToPages(kv, layout);
  if (!pages.ok()) return pages.status();
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::PutResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::PutRequest>> writer = stub_->Put(&context, &response);
  v1::PutRequest header;
  header.mutable_header()->mutable_tokens()->Add(tokens.begin(), tokens.end());
  header.mutable_header()->set_base_lease_id(base_lease_id);
  header.mutable_header()->set_base_tokens(base_tokens);
  *header.mutable_header()->mutable_layout() = layout;
  bool ok = writer->Write(header);
  const char* data = static_cast<const char*>(pages->data_ptr());
  const int64_t total = pages->numel() * pages->element_size();
  for (int64_t offset = 0; ok && offset < total; offset += options_.chunk_bytes) {
    v1::PutRequest chunk;
    chunk.mutable_chunk()->set_offset(offset);
    chunk.mutable_chunk()->set_data(data + offset, std::min(options_.chunk_bytes, total - offset));
    ok = writer->Write(chunk);
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return FromGrpcStatus(status, "kv store Put");
  return response;
}

absl::StatusOr<KvStoreClient::Fetched> KvStoreClient::Fetch(uint64_t lease_id) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::FetchRequest request;
  request.set_lease_id(lease_id);
  request.set_transport(v1::TRANSPORT_BYTES);
  request.set_max_chunk_bytes(options_.chunk_bytes);
  std::unique_ptr<grpc::ClientReader<v1::FetchResponse>> reader = stub_->Fetch(&context, request);
  v1::FetchResponse message;
  v1::FetchHeader header;
  bool have_header = false;
  torch::Tensor pages;  // (n, L, 2, H, P, D): the chunks land here directly
  char* data = nullptr;
  int64_t received = 0;
  absl::Status bad;
  while (reader->Read(&message)) {
    if (message.has_header() && !have_header) {
      header = message.header();
      have_header = ValidateKvLayout(header.layout()).ok() && header.pages() >= 0 &&
                    header.total_bytes() == header.pages() * KvBytesPerPage(header.layout());
      if (!have_header) {
        bad = absl::InternalError("kv store Fetch: malformed header");
      } else {
        const v1::KvLayout& l = header.layout();
        pages = torch::empty({header.pages(), l.n_layer(), 2, l.n_head(), l.page_size(), l.head_dim()},
                             torch::TensorOptions().dtype(*KvLayoutDtype(l)));
        data = static_cast<char*>(pages.data_ptr());
      }
    } else if (message.has_chunk() && have_header &&
               static_cast<int64_t>(message.chunk().offset()) == received &&
               received + static_cast<int64_t>(message.chunk().data().size()) <= header.total_bytes()) {
      std::memcpy(data + received, message.chunk().data().data(), message.chunk().data().size());
      received += static_cast<int64_t>(message.chunk().data().size());
    } else if (bad.ok()) {
      bad = absl::InternalError("kv store Fetch: out-of-order or unexpected message");
    }
    if (!bad.ok()) context.TryCancel();
  }
  grpc::Status status = reader->Finish();
  if (!bad.ok()) return bad;
  if (!status.ok()) return FromGrpcStatus(status, "kv store Fetch");
  if (!have_header || received != header.total_bytes()) {
    return absl::InternalError("kv store Fetch: stream ended early");
  }
  Fetched fetched;
  fetched.kv = PagesToKv(pages);
  fetched.tokens = header.tokens();
  fetched.bytes = header.total_bytes();
  return fetched;
}

absl::Status KvStoreClient::Release(uint64_t lease_id) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ReleaseRequest request;
  request.set_lease_id(lease_id);
  v1::ReleaseResponse response;
  return FromGrpcStatus(stub_->Release(&context, request, &response), "kv store Release");
}

absl::StatusOr<std::vector<uint64_t>> KvStoreClient::Renew(const std::vector<uint64_t>& lease_ids) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::RenewLeaseRequest request;
  request.mutable_lease_ids()->Add(lease_ids.begin(), lease_ids.end());
  v1::RenewLeaseResponse response;
  grpc::Status status = stub_->RenewLease(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status, "kv store RenewLease");
  return std::vector<uint64_t>(response.unknown_lease_ids().begin(),
                               response.unknown_lease_ids().end());
}

absl::StatusOr<v1::StatsResponse> KvStoreClient::Stats() {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::StatsResponse response;
  grpc::Status status = stub_->Stats(&context, v1::StatsRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status, "kv store Stats");
  return response;
}

}  // namespace nanoserve
