// The KV store handler without a network: Put then Fetch returns the same
// bytes in bounded chunks, prefix matches and leases behave, and every bad
// request gets its code and changes nothing (no page leaks).
#include "kv_store/server/kv_store_handler.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kv_store/client/kv_wire.h"

namespace nanoserve {
namespace kv_store_handler_test {

constexpr int64_t kPageSize = 4;
// A caller of a store without TLS.
const PeerIdentity kAnyone;

// Who puts, where, for whom, through which handler (null: the fixture's).
struct PutScope {
  PeerIdentity caller;
  std::string cache_salt;
  std::string lease_holder;
  KvStoreHandler* handler = nullptr;
};

class KvStoreHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PrefixCacheOptions o;
    o.pool.layout.page_size = kPageSize;
    o.pool.layout.n_layer = 2;
    o.pool.layout.n_head = 2;
    o.pool.layout.head_dim = 3;
    o.pool.byte_budget = 6 * o.pool.layout.bytes_per_page();  // 6 pages
    cache_ = PrefixCache::Create(o).value();
    KvStoreHandlerOptions h;
    h.max_chunk_bytes = 100;  // a page is 2*2*2*4*3*4 = 384 bytes: several chunks each
    h.vocab_size = 50;
    handler_ = std::make_unique<KvStoreHandler>(cache_.get(), h, &metrics_);
  }

  // Pages of `n` tokens (a run of pages, page_layout.h) whose values encode
  // (token position, salt).
  torch::Tensor Kv(int64_t begin, int64_t n, float salt) {
    const int64_t pages = n / kPageSize;
    return (torch::arange(begin, begin + n, torch::kFloat).view({pages, 1, 1, 1, kPageSize, 1}) +
            salt)
        .expand({pages, 2, 2, 2, kPageSize, 3})
        .contiguous();
  }

  grpc::Status Put(const std::vector<int32_t>& tokens, uint64_t base_lease, int64_t base_tokens,
                   const torch::Tensor& kv, v1::PutResponse* response, const PutScope& scope = {}) {
    KvStoreHandler* handler = scope.handler != nullptr ? scope.handler : handler_.get();
    auto session = handler->StartPut(scope.caller);
    v1::PutRequest header;
    header.mutable_header()->mutable_tokens()->Add(tokens.begin(), tokens.end());
    header.mutable_header()->set_base_lease_id(base_lease);
    header.mutable_header()->set_base_tokens(base_tokens);
    header.mutable_header()->set_cache_salt(scope.cache_salt);
    header.mutable_header()->set_lease_holder(scope.lease_holder);
    *header.mutable_header()->mutable_layout() = handler_->layout();
    if (grpc::Status s = session->OnMessage(header); !s.ok()) return s;
    const torch::Tensor& pages = kv;
    const char* data = static_cast<const char*>(pages.data_ptr());
    const int64_t total = pages.numel() * 4;
    for (int64_t off = 0; off < total; off += 150) {
      v1::PutRequest chunk;
      chunk.mutable_chunk()->set_offset(off);
      chunk.mutable_chunk()->set_data(data + off, std::min<int64_t>(150, total - off));
      if (grpc::Status s = session->OnMessage(chunk); !s.ok()) return s;
    }
    return session->Finish(response);
  }

  // Fetches a lease; checks chunk bounds and order; returns the K/V.
  torch::Tensor Fetch(uint64_t lease, const PeerIdentity& caller = kAnyone) {
    v1::FetchRequest request;
    request.set_lease_id(lease);
    std::unique_ptr<KvStoreHandler::FetchSession> session;
    grpc::Status s = handler_->StartFetch(request, caller, &session);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) return {};
    v1::FetchResponse message;
    EXPECT_TRUE(session->Next(&message));
    EXPECT_TRUE(message.has_header());
    const v1::FetchHeader header = message.header();
    std::string bytes;
    while (session->Next(&message)) {
      EXPECT_TRUE(message.has_chunk());
      EXPECT_LE(message.chunk().data().size(), 100u);
      EXPECT_EQ(message.chunk().offset(), bytes.size());
      bytes += message.chunk().data();
    }
    EXPECT_EQ(static_cast<int64_t>(bytes.size()), header.total_bytes());
    EXPECT_TRUE(session->Done().ok());
    return PagesFromBytes(KvLayoutFromProto(header.layout()).value(), bytes).value();
  }

  MetricsRegistry metrics_;
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<KvStoreHandler> handler_;
};

TEST_F(KvStoreHandlerTest, PutThenMatchAndFetchReturnTheSameKv) {
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  v1::PutResponse put;
  ASSERT_TRUE(Put(tokens, 0, 0, Kv(0, 8, 0.5f), &put).ok());
  EXPECT_EQ(put.cached_tokens(), 8);
  EXPECT_EQ(put.inserted_tokens(), 8);
  EXPECT_TRUE(torch::equal(Fetch(put.lease_id()), Kv(0, 8, 0.5f)));

  // A prompt sharing the first page, extended by one page after it.
  v1::MatchRequest match_request;
  for (int32_t t : {1, 2, 3, 4, 9, 9, 9, 9, 9}) match_request.add_tokens(t);
  v1::MatchResponse match;
  ASSERT_TRUE(handler_->Match(match_request, kAnyone, &match).ok());
  EXPECT_EQ(match.matched_tokens(), 4);
  EXPECT_EQ(match.layout().page_size(), kPageSize);
  v1::PutResponse put2;
  ASSERT_TRUE(Put({1, 2, 3, 4, 9, 9, 9, 9}, match.lease_id(), 4, Kv(4, 4, 7.0f), &put2).ok());
  EXPECT_EQ(put2.inserted_tokens(), 4);
  torch::Tensor both = Fetch(put2.lease_id());
  EXPECT_TRUE(torch::equal(both.narrow(0, 0, 1), Kv(0, 4, 0.5f)));
  EXPECT_TRUE(torch::equal(both.narrow(0, 1, 1), Kv(4, 4, 7.0f)));

  v1::StatsResponse stats;
  ASSERT_TRUE(handler_->Stats({}, &stats).ok());
  EXPECT_EQ(stats.pages_cached(), 3);
  EXPECT_EQ(stats.active_leases(), 3);
  EXPECT_EQ(stats.hit_tokens(), 4);
  EXPECT_EQ(stats.put_bytes(), 3 * stats.bytes_per_page());
  for (uint64_t id : {put.lease_id(), match.lease_id(), put2.lease_id()}) {
    v1::ReleaseRequest release;
    release.set_lease_id(id);
    v1::ReleaseResponse released;
    EXPECT_TRUE(handler_->Release(release, kAnyone, &released).ok());
  }
  ASSERT_TRUE(handler_->Stats({}, &stats).ok());
  EXPECT_EQ(stats.pages_pinned(), 0);
  EXPECT_EQ(stats.active_leases(), 0);
  EXPECT_NE(metrics_.Render().find("nanoserve_kv_store_pages_in_use 3"), std::string::npos);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

// The store names its model in the layouts it answers, and refuses pages a
// writer of another model puts (same shape, other weights: wrong tokens for
// whoever reads them); a writer of the same model, or one that does not
// say, is served.
TEST_F(KvStoreHandlerTest, PagesOfAnotherModelAreRefused) {
  KvStoreHandlerOptions h;
  h.vocab_size = 50;
  h.model_fingerprint = "random:tiny seed 1";
  KvStoreHandler store(cache_.get(), h, nullptr);
  v1::MatchRequest match_request;
  for (int32_t t : {1, 2, 3, 4}) match_request.add_tokens(t);
  v1::MatchResponse match;
  ASSERT_TRUE(store.Match(match_request, kAnyone, &match).ok());
  EXPECT_EQ(match.layout().model_fingerprint(), "random:tiny seed 1");
  std::vector<uint64_t> leases;
  auto put = [&](const std::string& model) {
    auto session = store.StartPut(kAnyone);
    v1::PutRequest header;
    for (int32_t t : {1, 2, 3, 4}) header.mutable_header()->add_tokens(t);
    *header.mutable_header()->mutable_layout() = store.layout();
    header.mutable_header()->mutable_layout()->set_model_fingerprint(model);
    if (grpc::Status s = session->OnMessage(header); !s.ok()) return s;
    const torch::Tensor kv = Kv(0, kPageSize, 0.5f);
    v1::PutRequest chunk;
    chunk.mutable_chunk()->set_data(kv.data_ptr(), kv.numel() * 4);
    if (grpc::Status s = session->OnMessage(chunk); !s.ok()) return s;
    v1::PutResponse response;
    grpc::Status s = session->Finish(&response);
    if (s.ok()) leases.push_back(response.lease_id());
    return s;
  };
  const grpc::Status other = put("random:tiny seed 2");
  EXPECT_EQ(other.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << other.error_message();
  EXPECT_NE(other.error_message().find("'random:tiny seed 2'"), std::string::npos);
  EXPECT_NE(other.error_message().find("'random:tiny seed 1'"), std::string::npos);
  EXPECT_EQ(cache_->Stats().pages_cached, 0);
  EXPECT_TRUE(put("random:tiny seed 1").ok());
  EXPECT_TRUE(put("").ok());
  EXPECT_EQ(cache_->Stats().pages_cached, 1);
  for (uint64_t id : leases) {
    v1::ReleaseRequest release;
    release.set_lease_id(id);
    v1::ReleaseResponse released;
    EXPECT_TRUE(store.Release(release, kAnyone, &released).ok());
  }
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

TEST_F(KvStoreHandlerTest, BadRequestsGetTheirCodesAndLeakNothing) {
  v1::PutResponse put;
  auto code = [](const grpc::Status& s) { return s.error_code(); };
  // Not a page multiple; bad token id; a base without its lease; an unknown lease.
  EXPECT_EQ(code(Put({1, 2, 3}, 0, 0, Kv(0, 4, 0), &put)), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(Put({1, 2, 3, 50}, 0, 0, Kv(0, 4, 0), &put)), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(Put({1, 2, 3, 4}, 0, 4, Kv(0, 0, 0), &put)), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(Put({1, 2, 3, 4, 5, 6, 7, 8}, 77, 4, Kv(4, 4, 0), &put)),
            grpc::StatusCode::NOT_FOUND);
  // More pages than the pool holds.
  std::vector<int32_t> long_run(7 * kPageSize, 3);
  EXPECT_EQ(code(Put(long_run, 0, 0, Kv(0, 7 * kPageSize, 0), &put)),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  {  // Too few bytes: refused at the end, its pages given back.
    auto session = handler_->StartPut(kAnyone);
    v1::PutRequest header;
    for (int t : {1, 2, 3, 4}) header.mutable_header()->add_tokens(t);
    *header.mutable_header()->mutable_layout() = handler_->layout();
    ASSERT_TRUE(session->OnMessage(header).ok());
    v1::PutRequest chunk;
    chunk.mutable_chunk()->set_data(std::string(10, 'x'));
    ASSERT_TRUE(session->OnMessage(chunk).ok());
    v1::PutRequest gap;
    gap.mutable_chunk()->set_offset(500);
    gap.mutable_chunk()->set_data("y");
    EXPECT_EQ(code(session->OnMessage(gap)), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(code(session->Finish(&put)), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {  // Wrong layout; bytes before the header.
    auto session = handler_->StartPut(kAnyone);
    v1::PutRequest chunk;
    chunk.mutable_chunk()->set_data("z");
    EXPECT_EQ(code(session->OnMessage(chunk)), grpc::StatusCode::INVALID_ARGUMENT);
    v1::PutRequest header;
    for (int t : {1, 2, 3, 4}) header.mutable_header()->add_tokens(t);
    *header.mutable_header()->mutable_layout() = handler_->layout();
    header.mutable_header()->mutable_layout()->set_dtype("bf16");
    EXPECT_EQ(code(session->OnMessage(header)), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {  // A lease released while its pages stream: the Fetch fails.
    v1::PutResponse held;
    ASSERT_TRUE(Put({1, 2, 3, 4}, 0, 0, Kv(0, 4, 0), &held).ok());
    v1::FetchRequest request;
    request.set_lease_id(held.lease_id());
    std::unique_ptr<KvStoreHandler::FetchSession> streaming;
    ASSERT_TRUE(handler_->StartFetch(request, kAnyone, &streaming).ok());
    v1::FetchResponse message;
    ASSERT_TRUE(streaming->Next(&message));
    v1::ReleaseRequest release;
    release.set_lease_id(held.lease_id());
    v1::ReleaseResponse released;
    ASSERT_TRUE(handler_->Release(release, kAnyone, &released).ok());
    while (streaming->Next(&message)) {
    }
    EXPECT_EQ(streaming->Done().error_code(), grpc::StatusCode::ABORTED);
    EXPECT_EQ(cache_->EvictAll(), 1);
  }
  v1::FetchRequest fetch;
  std::unique_ptr<KvStoreHandler::FetchSession> session;
  fetch.set_lease_id(12345);
  EXPECT_EQ(code(handler_->StartFetch(fetch, kAnyone, &session)), grpc::StatusCode::NOT_FOUND);
  // A pool that is not exported (or not as that) serves no page ids.
  fetch.set_transport(v1::TRANSPORT_CUDA_IPC);
  EXPECT_EQ(code(handler_->StartFetch(fetch, kAnyone, &session)),
            grpc::StatusCode::FAILED_PRECONDITION);
  v1::MatchRequest match;
  match.add_tokens(-1);
  v1::MatchResponse matched;
  EXPECT_EQ(code(handler_->Match(match, kAnyone, &matched)), grpc::StatusCode::INVALID_ARGUMENT);

  v1::StatsResponse stats;
  ASSERT_TRUE(handler_->Stats({}, &stats).ok());
  EXPECT_EQ(stats.pages_free(), stats.pages_total());
  EXPECT_EQ(stats.active_leases(), 0);
  EXPECT_EQ(stats.lookups(), 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

}  // namespace kv_store_handler_test
}  // namespace nanoserve

namespace nanoserve {
namespace kv_store_handler_test {

// A Put stream that stalls after its header holds no page: a dozen of them
// leave the pool to everyone else. Their buffered bytes are bounded.
TEST_F(KvStoreHandlerTest, StalledPutsHoldNoPages) {
  std::vector<std::unique_ptr<KvStoreHandler::PutSession>> stalled;
  for (int i = 0; i < 12; ++i) {
    auto session = handler_->StartPut(kAnyone);
    v1::PutRequest header;
    for (int32_t t : {1, 2, 3, 4, 5, 6, 7, 8}) header.mutable_header()->add_tokens(t + i);
    *header.mutable_header()->mutable_layout() = handler_->layout();
    ASSERT_TRUE(session->OnMessage(header).ok()) << i;
    stalled.push_back(std::move(session));
  }
  EXPECT_EQ(cache_->Stats().pages_in_use, 0);
  // The whole pool is still there for a Put that finishes.
  v1::PutResponse put;
  std::vector<int32_t> tokens;
  for (int i = 0; i < 6 * kPageSize; ++i) tokens.push_back(i % 50);
  ASSERT_TRUE(Put(tokens, 0, 0, Kv(0, 6 * kPageSize, 0), &put).ok());
  EXPECT_EQ(cache_->Stats().pages_in_use, 6);
  v1::ReleaseRequest release;
  release.set_lease_id(put.lease_id());
  v1::ReleaseResponse released;
  ASSERT_TRUE(handler_->Release(release, kAnyone, &released).ok());
  stalled.clear();  // the streams end: their bytes are let go, no page to free
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

TEST_F(KvStoreHandlerTest, PutStreamsInFlightAreBounded) {
  KvStoreHandlerOptions o;
  o.vocab_size = 50;
  o.max_put_buffer_bytes = 3 * cache_->options().pool.layout.bytes_per_page();
  KvStoreHandler handler(cache_.get(), o, nullptr);
  auto header = [&](int pages) {
    v1::PutRequest h;
    for (int i = 0; i < pages * kPageSize; ++i) h.mutable_header()->add_tokens(i % 50);
    *h.mutable_header()->mutable_layout() = handler.layout();
    return h;
  };
  auto first = handler.StartPut(kAnyone);
  ASSERT_TRUE(first->OnMessage(header(2)).ok());
  auto second = handler.StartPut(kAnyone);
  EXPECT_EQ(second->OnMessage(header(2)).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  first.reset();  // ends: its bytes no longer count
  auto third = handler.StartPut(kAnyone);
  EXPECT_TRUE(third->OnMessage(header(3)).ok());
}

}  // namespace kv_store_handler_test
}  // namespace nanoserve

namespace nanoserve {
namespace kv_store_handler_test {

// An authenticated caller, as PeerIdentityOf makes it over mutual TLS.
PeerIdentity Peer(const std::string& name) {
  PeerIdentity peer;
  peer.authenticated = true;
  peer.name = name;
  peer.names = {name, "127.0.0.1"};
  return peer;
}

// With writer identities, only they may Put; everyone else is refused
// before anything is read or changed.
TEST_F(KvStoreHandlerTest, OnlyWriterIdentitiesMayPut) {
  KvStoreHandlerOptions o;
  o.vocab_size = 50;
  o.writer_identities = {"prefill"};
  KvStoreHandler guarded(cache_.get(), o, nullptr);
  v1::PutResponse put;
  for (const PeerIdentity& caller : {Peer("decode"), Peer("client"), PeerIdentity()}) {
    EXPECT_EQ(Put({1, 2, 3, 4}, 0, 0, Kv(0, 4, 0), &put, {caller, "", "", &guarded}).error_code(),
              grpc::StatusCode::PERMISSION_DENIED)
        << caller.name;
  }
  EXPECT_EQ(cache_->Stats().pages_in_use, 0);
  EXPECT_EQ(cache_->Stats().inserted_tokens, 0);
  // A writer named by an alternative name of its certificate.
  PeerIdentity prefill = Peer("prefill-0");
  prefill.names.push_back("prefill");
  ASSERT_TRUE(Put({1, 2, 3, 4}, 0, 0, Kv(0, 4, 0), &put, {prefill, "", "", &guarded}).ok());
  EXPECT_EQ(put.inserted_tokens(), 4);
  // A certificate without a name is refused outright.
  PeerIdentity unnamed;
  unnamed.authenticated = true;
  v1::MatchRequest match;
  match.add_tokens(1);
  v1::MatchResponse matched;
  EXPECT_EQ(guarded.Match(match, unnamed, &matched).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

// A lease taken by one identity is invisible to another: Fetch, Release
// and Renew see NOT_FOUND, as for an id that never existed, and the lease
// lives on. The holder a Put names may use it.
TEST_F(KvStoreHandlerTest, LeasesAreBoundToTheCallerAndTheHolder) {
  v1::PutResponse put;
  ASSERT_TRUE(Put({1, 2, 3, 4}, 0, 0, Kv(0, 4, 0.25f), &put, {Peer("prefill"), "", "decode"}).ok());
  const uint64_t lease = put.lease_id();
  for (const PeerIdentity& stranger : {Peer("client"), kAnyone}) {
    v1::FetchRequest fetch;
    fetch.set_lease_id(lease);
    std::unique_ptr<KvStoreHandler::FetchSession> session;
    EXPECT_EQ(handler_->StartFetch(fetch, stranger, &session).error_code(),
              grpc::StatusCode::NOT_FOUND);
    v1::ReleaseRequest release;
    release.set_lease_id(lease);
    v1::ReleaseResponse released;
    EXPECT_EQ(handler_->Release(release, stranger, &released).error_code(),
              grpc::StatusCode::NOT_FOUND);
    v1::RenewLeaseRequest renew;
    renew.add_lease_ids(lease);
    v1::RenewLeaseResponse renewed;
    ASSERT_TRUE(handler_->RenewLease(renew, stranger, &renewed).ok());
    EXPECT_EQ(renewed.unknown_lease_ids_size(), 1);
    // Nor can a stranger build on it as a Put's base.
    EXPECT_EQ(Put({1, 2, 3, 4, 5, 6, 7, 8}, lease, 4, Kv(4, 4, 0), &put, {stranger}).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  EXPECT_EQ(cache_->Stats().active_leases, 1);
  EXPECT_TRUE(torch::equal(Fetch(lease, Peer("decode")), Kv(0, 4, 0.25f)));
  v1::ReleaseRequest release;
  release.set_lease_id(lease);
  v1::ReleaseResponse released;
  EXPECT_TRUE(handler_->Release(release, Peer("decode"), &released).ok());
  EXPECT_EQ(cache_->Stats().active_leases, 0);
}

// Cache salts: what one namespace stored, another does not match.
TEST_F(KvStoreHandlerTest, MatchAndPutStayInTheirCacheSalt) {
  v1::PutResponse put;
  ASSERT_TRUE(Put({1, 2, 3, 4}, 0, 0, Kv(0, 4, 0), &put, {kAnyone, "tenant-a"}).ok());
  auto matched = [&](const std::string& salt) {
    v1::MatchRequest match;
    for (int32_t t : {1, 2, 3, 4, 5}) match.add_tokens(t);
    match.set_cache_salt(salt);
    v1::MatchResponse response;
    EXPECT_TRUE(handler_->Match(match, kAnyone, &response).ok());
    if (response.lease_id() != 0) cache_->Release(response.lease_id()).IgnoreError();
    return response.matched_tokens();
  };
  EXPECT_EQ(matched("tenant-a"), 4);
  EXPECT_EQ(matched("tenant-b"), 0);
  EXPECT_EQ(matched(""), 0);
  // A base lease of one namespace does not extend another's.
  v1::MatchRequest match;
  for (int32_t t : {1, 2, 3, 4}) match.add_tokens(t);
  match.set_cache_salt("tenant-a");
  v1::MatchResponse a;
  ASSERT_TRUE(handler_->Match(match, kAnyone, &a).ok());
  EXPECT_EQ(Put({1, 2, 3, 4, 5, 6, 7, 8}, a.lease_id(), 4, Kv(4, 4, 0), &put, {kAnyone, "tenant-b"})
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(cache_->Release(a.lease_id()).ok());
  ASSERT_TRUE(cache_->Release(put.lease_id()).ok());
  // An over-long salt is refused.
  match.set_cache_salt(std::string(kMaxCacheSaltBytes + 1, 's'));
  EXPECT_EQ(handler_->Match(match, kAnyone, &a).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Put({1, 2, 3, 4}, 0, 0, Kv(0, 4, 0), &put, {kAnyone, match.cache_salt()}).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok()) << cache_->CheckInvariants();
}

// Quotas per caller: the one anonymous caller took 20 000 leases
// and pinned every page. Without TLS a caller is its address: one at its
// bound is refused (and keeps what it holds) while another is served, and a
// release gives the share back.
TEST_F(KvStoreHandlerTest, OneCallerCannotHoldEveryLease) {
  KvStoreHandlerOptions o;
  o.vocab_size = 50;
  o.quotas.max_leases = 2;
  KvStoreHandler handler(cache_.get(), o, nullptr);
  PeerIdentity greedy, other;
  greedy.address = "ipv4:10.0.0.1";
  other.address = "ipv4:10.0.0.2";
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  v1::PutResponse put;
  ASSERT_TRUE(Put(tokens, 0, 0, Kv(0, 8, 0), &put, {greedy, "", "", &handler}).ok());
  v1::MatchRequest match;
  match.mutable_tokens()->Add(tokens.begin(), tokens.end());
  v1::MatchResponse second;
  ASSERT_TRUE(handler.Match(match, greedy, &second).ok());  // its second lease
  v1::MatchResponse refused;
  const grpc::Status over = handler.Match(match, greedy, &refused);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over.error_message().find("--max_leases_per_caller"), std::string::npos);
  EXPECT_NE(over.error_message().find("ipv4:10.0.0.1"), std::string::npos);
  v1::PutResponse refused_put;
  EXPECT_EQ(
      Put({9, 9, 9, 9}, 0, 0, Kv(0, 4, 0), &refused_put, {greedy, "", "", &handler}).error_code(),
      grpc::StatusCode::RESOURCE_EXHAUSTED);
  v1::MatchResponse served;
  ASSERT_TRUE(handler.Match(match, other, &served).ok()) << "another caller is served";
  EXPECT_EQ(served.matched_tokens(), 8);
  EXPECT_EQ(handler.quotas().UsageOf("ipv4:10.0.0.1").leases, 2);
  // Two leases on the same 2 pages (8 tokens of 4-token pages) pin them once.
  EXPECT_EQ(handler.quotas().UsageOf("ipv4:10.0.0.1").pinned_pages, 2);
  v1::ReleaseRequest release;
  release.set_lease_id(second.lease_id());
  v1::ReleaseResponse released;
  ASSERT_TRUE(handler.Release(release, greedy, &released).ok());
  EXPECT_TRUE(handler.Match(match, greedy, &refused).ok()) << "a release gives the share back";
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

// A prefill batch matches all its prompts in one call and ends all its
// leases in another: each query is answered in order as its own Match
// would be, and one Release ends many leases (the unknown ones named, the
// others released all the same).
TEST_F(KvStoreHandlerTest, MatchBatchAnswersInOrderAndOneReleaseEndsManyLeases) {
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  v1::PutResponse put;
  ASSERT_TRUE(Put(tokens, 0, 0, Kv(0, 8, 0), &put).ok());
  v1::MatchBatchRequest batch;
  for (const std::vector<int32_t>& q :
       std::vector<std::vector<int32_t>>{{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 9}, {9, 9, 9}}) {
    batch.add_queries()->mutable_tokens()->Add(q.begin(), q.end());
  }
  v1::MatchBatchResponse matched;
  ASSERT_TRUE(handler_->MatchBatch(batch, kAnyone, &matched).ok());
  ASSERT_EQ(matched.matches_size(), 3);
  EXPECT_EQ(matched.matches(0).matched_tokens(), 8);
  EXPECT_EQ(matched.matches(1).matched_tokens(), 4);
  EXPECT_EQ(matched.matches(2).matched_tokens(), 0);
  EXPECT_EQ(matched.matches(2).lease_id(), 0u);
  EXPECT_EQ(matched.matches(0).layout().page_size(), kPageSize);
  EXPECT_EQ(cache_->Stats().active_leases, 3);  // the Put's and two
  EXPECT_EQ(handler_->calls().match.load(), 1);

  v1::ReleaseRequest release;
  release.set_lease_id(put.lease_id());
  release.add_lease_ids(matched.matches(0).lease_id());
  release.add_lease_ids(matched.matches(1).lease_id());
  v1::ReleaseResponse released;
  ASSERT_TRUE(handler_->Release(release, kAnyone, &released).ok());
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_EQ(handler_->calls().release.load(), 1);

  // Again: all unknown now, each named.
  const grpc::Status again = handler_->Release(release, kAnyone, &released);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(again.error_message().find(std::to_string(matched.matches(1).lease_id())),
            std::string::npos);
  // A known lease beside an unknown one is released, and the call says
  // which one it did not know.
  v1::MatchResponse one;
  v1::MatchRequest match;
  match.mutable_tokens()->Add(tokens.begin(), tokens.end());
  ASSERT_TRUE(handler_->Match(match, kAnyone, &one).ok());
  v1::ReleaseRequest mixed;
  mixed.add_lease_ids(one.lease_id());
  mixed.add_lease_ids(put.lease_id());
  const grpc::Status partly = handler_->Release(mixed, kAnyone, &released);
  EXPECT_EQ(partly.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(partly.error_message().find(std::to_string(put.lease_id())), std::string::npos);
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok()) << cache_->CheckInvariants();
}

// A MatchBatch with a bad query, none, too many, or one that a quota
// refuses fails as a whole and leaves no lease behind; so does a Release
// with no id, a zero id or too many.
TEST_F(KvStoreHandlerTest, ABadOrRefusedMatchBatchLeavesNoLease) {
  KvStoreHandlerOptions o;
  o.vocab_size = 50;
  o.quotas.max_leases = 2;
  KvStoreHandler handler(cache_.get(), o, nullptr);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  v1::PutResponse put;
  ASSERT_TRUE(Put(tokens, 0, 0, Kv(0, 8, 0), &put).ok());
  ASSERT_TRUE(cache_->Release(put.lease_id()).ok());
  auto batch_of = [&](int n) {
    v1::MatchBatchRequest batch;
    for (int i = 0; i < n; ++i)
      batch.add_queries()->mutable_tokens()->Add(tokens.begin(), tokens.end());
    return batch;
  };
  v1::MatchBatchResponse response;
  // Three leases for a caller allowed two: the first two are handed back.
  const grpc::Status over = handler.MatchBatch(batch_of(3), kAnyone, &response);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over.error_message().find("query 2"), std::string::npos) << over.error_message();
  EXPECT_EQ(response.matches_size(), 0);
  EXPECT_EQ(cache_->Stats().active_leases, 0);
  EXPECT_EQ(handler.quotas().callers(), 0);

  v1::MatchBatchRequest bad = batch_of(2);
  bad.mutable_queries(1)->add_tokens(99);  // outside the vocabulary
  const grpc::Status invalid = handler.MatchBatch(bad, kAnyone, &response);
  EXPECT_EQ(invalid.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(invalid.error_message().find("query 1"), std::string::npos);
  EXPECT_EQ(handler.MatchBatch(batch_of(0), kAnyone, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(handler.MatchBatch(batch_of(1025), kAnyone, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(cache_->Stats().active_leases, 0);

  v1::ReleaseResponse released;
  EXPECT_EQ(handler.Release(v1::ReleaseRequest(), kAnyone, &released).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::ReleaseRequest zero;
  zero.add_lease_ids(0);
  EXPECT_EQ(handler.Release(zero, kAnyone, &released).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::ReleaseRequest many;
  for (int i = 0; i < 4097; ++i) many.add_lease_ids(i + 1);
  EXPECT_EQ(handler.Release(many, kAnyone, &released).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(cache_->CheckInvariants().ok()) << cache_->CheckInvariants();
}

// Real serving at 64 in flight on one prompt: decode (one caller at the
// store) holds 64 leases on the same pages. They pin those pages once, in
// the pool and in the quota, so a bound far below 64 leases' worth of pages
// serves them all.
TEST_F(KvStoreHandlerTest, ManyLeasesOnOnePromptCountItsPagesOnce) {
  KvStoreHandlerOptions o;
  o.vocab_size = 50;
  o.quotas.max_pinned_pages = 3;
  KvStoreHandler handler(cache_.get(), o, nullptr);
  PeerIdentity decode;
  decode.address = "ipv4:127.0.0.1";
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  v1::PutResponse put;
  ASSERT_TRUE(Put(tokens, 0, 0, Kv(0, 8, 0), &put, {decode, "", "", &handler}).ok());
  v1::MatchRequest match;
  match.mutable_tokens()->Add(tokens.begin(), tokens.end());
  std::vector<uint64_t> leases = {put.lease_id()};
  for (int i = 0; i < 63; ++i) {
    v1::MatchResponse matched;
    const grpc::Status s = handler.Match(match, decode, &matched);
    ASSERT_TRUE(s.ok()) << "lease " << i + 2 << ": " << s.error_message();
    EXPECT_EQ(matched.matched_tokens(), 8);
    leases.push_back(matched.lease_id());
  }
  EXPECT_EQ(handler.quotas().UsageOf("ipv4:127.0.0.1").leases, 64);
  EXPECT_EQ(handler.quotas().UsageOf("ipv4:127.0.0.1").pinned_pages, 2);
  for (uint64_t lease : leases) {
    v1::ReleaseRequest release;
    release.set_lease_id(lease);
    v1::ReleaseResponse released;
    ASSERT_TRUE(handler.Release(release, decode, &released).ok());
  }
  EXPECT_EQ(handler.quotas().callers(), 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

// The 6 Put streams that sent a header and then nothing held the
// whole Put allowance for minutes: now each caller has its share, and a
// stream idle past put_idle_timeout is cancelled and gives its share back.
TEST_F(KvStoreHandlerTest, IdlePutStreamsAreCancelledAndPerCallerBounded) {
  KvStoreHandlerOptions o;
  o.vocab_size = 50;
  o.quotas.max_puts = 2;
  o.put_idle_timeout = absl::Seconds(5);
  KvStoreHandler handler(cache_.get(), o, nullptr);
  PeerIdentity stalling, other;
  stalling.address = "ipv4:10.0.0.1";
  other.address = "ipv4:10.0.0.2";
  v1::PutRequest header;
  for (int32_t t : {1, 2, 3, 4}) header.mutable_header()->add_tokens(t);
  *header.mutable_header()->mutable_layout() = handler.layout();
  int cancels = 0;
  std::vector<std::unique_ptr<KvStoreHandler::PutSession>> stalled;
  for (int i = 0; i < 2; ++i) {
    stalled.push_back(handler.StartPut(stalling));
    stalled.back()->SetCancel([&cancels] { ++cancels; });
    ASSERT_TRUE(stalled.back()->OnMessage(header).ok());
  }
  auto third = handler.StartPut(stalling);
  const grpc::Status over = third->OnMessage(header);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over.error_message().find("--max_puts_per_caller"), std::string::npos);
  third.reset();
  auto elsewhere = handler.StartPut(other);
  ASSERT_TRUE(elsewhere->OnMessage(header).ok()) << "another caller is served";
  EXPECT_EQ(handler.CancelIdlePuts(absl::Now()), 0) << "not idle yet";
  EXPECT_EQ(handler.CancelIdlePuts(absl::Now() + absl::Seconds(6)), 3);
  EXPECT_EQ(cancels, 2);
  EXPECT_EQ(handler.CancelIdlePuts(absl::Now() + absl::Seconds(6)), 0) << "cancelled once";
  v1::PutResponse response;
  const grpc::Status idle = stalled[0]->Finish(&response);
  EXPECT_EQ(idle.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_NE(idle.error_message().find("--put_idle_timeout_s"), std::string::npos);
  stalled.clear();
  elsewhere.reset();
  EXPECT_EQ(handler.quotas().callers(), 0);
  EXPECT_EQ(cache_->Stats().pages_in_use, 0);
}

}  // namespace kv_store_handler_test
}  // namespace nanoserve
