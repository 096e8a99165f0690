// The KV store's shared data plane on the CPU (a shared-memory pool): the
// handler's Connect / Reserve / commit / shared Fetch contract, and a
// RemotePrefixStore over a real gRPC server moving pages in place, with the
// same results as over bytes; a store restart (new epoch) is refused, then
// mapped again. Batches: one Reserve and one Commit call per Store of many
// rows, a partial grant, the page ids a commit answers read with no Fetch.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/prefill.h"
#include "kv_cache/shared_memory.h"
#include "kv_store/client/kv_store_client.h"
#include "kv_store/client/remote_prefix_store.h"
#include "kv_store/server/kv_store_handler.h"
#include "kv_store/server/kv_store_service.h"
#include "tests/test_util/model.h"

namespace nanoserve {
namespace kv_data_plane_test {

constexpr int64_t kPageSize = 4;
const PeerIdentity kAnyone;

PrefixCacheOptions PoolOptions(bool exported, int64_t pages = 8) {
  PrefixCacheOptions o;
  o.pool.layout.page_size = kPageSize;
  o.pool.layout.n_layer = 2;
  o.pool.layout.n_head = 2;
  o.pool.layout.head_dim = 3;
  o.pool.byte_budget = pages * o.pool.layout.bytes_per_page();
  o.pool.exported = exported;
  o.pool.epoch = NewEpoch();
  return o;
}

KvStoreHandlerOptions HandlerOptions(uint64_t epoch) {
  KvStoreHandlerOptions h;
  h.vocab_size = 50;
  h.epoch = epoch;
  return h;
}

// K/V of positions [begin, begin + n): (n_layer, 2, n_head, n, head_dim),
// values encoding the position.
torch::Tensor Kv(int64_t begin, int64_t n, float salt = 0) {
  return (torch::arange(begin, begin + n, torch::kFloat).view({1, 1, 1, n, 1}) + salt)
      .expand({2, 2, 2, n, 3})
      .contiguous();
}

std::vector<int32_t> Tokens(int64_t n, int32_t first = 1) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((first + i) % 50);
  return t;
}

// ---- the handler ----

class DataPlaneHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PrefixCacheOptions o = PoolOptions(/*exported=*/true);
    cache_ = PrefixCache::Create(o).value();
    ASSERT_EQ(cache_->segment().transport, KvTransport::kShm);
    handler_ =
        std::make_unique<KvStoreHandler>(cache_.get(), HandlerOptions(o.pool.epoch), &metrics_);
    epoch_ = o.pool.epoch;
  }

  v1::ConnectResponse Connect(const PeerIdentity& caller = kAnyone) {
    v1::ConnectRequest request;
    request.set_host_id(HostId());
    v1::ConnectResponse response;
    EXPECT_TRUE(handler_->Connect(request, caller, &response).ok());
    return response;
  }

  // The pool as a peer maps it.
  torch::Tensor Map(const v1::ConnectResponse& connected) {
    SharedSegment segment;
    segment.transport = KvTransport::kShm;
    segment.shm_name = connected.pool().shm_name();
    segment.offset_bytes = connected.pool().offset_bytes();
    segment.bytes = connected.pool().pool_bytes();
    return MapExported(segment, cache_->options().pool.layout.shape(cache_->num_pages()),
                       torch::kFloat, torch::kCPU, connected.epoch())
        .value();
  }

  grpc::Status Reserve(int64_t pages, v1::ReserveResponse* response, uint64_t epoch = 0) {
    v1::ReserveRequest request;
    request.set_pages(pages);
    request.set_epoch(epoch == 0 ? epoch_ : epoch);
    return handler_->Reserve(request, kAnyone, response);
  }

  grpc::Status Commit(const std::vector<int32_t>& tokens, uint64_t reservation,
                      v1::PutResponse* response, uint64_t epoch = 0) {
    auto session = handler_->StartPut(kAnyone);
    v1::PutRequest header;
    header.mutable_header()->mutable_tokens()->Add(tokens.begin(), tokens.end());
    *header.mutable_header()->mutable_layout() = handler_->layout();
    header.mutable_header()->set_reservation_id(reservation);
    header.mutable_header()->set_epoch(epoch == 0 ? epoch_ : epoch);
    if (grpc::Status s = session->OnMessage(header); !s.ok()) return s;
    return session->Finish(response);
  }

  // Fetch with the shared transport: the header then the page ids.
  grpc::Status FetchShared(uint64_t lease, std::vector<int32_t>* pages, uint64_t epoch = 0) {
    v1::FetchRequest request;
    request.set_lease_id(lease);
    request.set_transport(v1::TRANSPORT_SHM);
    request.set_epoch(epoch == 0 ? epoch_ : epoch);
    std::unique_ptr<KvStoreHandler::FetchSession> session;
    if (grpc::Status s = handler_->StartFetch(request, kAnyone, &session); !s.ok()) return s;
    v1::FetchResponse message;
    EXPECT_TRUE(session->Next(&message));
    EXPECT_TRUE(message.has_header());
    EXPECT_EQ(message.header().transport(), v1::TRANSPORT_SHM);
    EXPECT_TRUE(session->Next(&message));
    EXPECT_TRUE(message.has_shared());
    EXPECT_EQ(message.shared().epoch(), epoch_);
    pages->assign(message.shared().pages().begin(), message.shared().pages().end());
    EXPECT_FALSE(session->Next(&message));
    return session->Done();
  }

  int64_t FreePages() { return cache_->Stats().pages_free; }

  MetricsRegistry metrics_;
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<KvStoreHandler> handler_;
  uint64_t epoch_ = 0;
};

TEST_F(DataPlaneHandlerTest, ConnectOffersThePoolOnlyToPeersOnThisHost) {
  v1::ConnectResponse here = Connect();
  EXPECT_EQ(here.epoch(), epoch_);
  ASSERT_TRUE(here.has_pool()) << here.no_pool_reason();
  EXPECT_EQ(here.pool().transport(), v1::TRANSPORT_SHM);
  EXPECT_EQ(here.pool().num_pages(), cache_->num_pages());

  v1::ConnectRequest elsewhere;
  elsewhere.set_host_id("another-host");
  v1::ConnectResponse response;
  ASSERT_TRUE(handler_->Connect(elsewhere, kAnyone, &response).ok());
  EXPECT_FALSE(response.has_pool());
  EXPECT_NE(response.no_pool_reason().find("another host"), std::string::npos);
}

TEST_F(DataPlaneHandlerTest, OverTlsOnlyPoolIdentitiesMayMapThePool) {
  KvStoreHandlerOptions h = HandlerOptions(epoch_);
  h.pool_identities = {"decode"};
  handler_ = std::make_unique<KvStoreHandler>(cache_.get(), h, nullptr);
  PeerIdentity decode;
  decode.authenticated = true;
  decode.name = "decode";
  decode.names = {"decode"};
  PeerIdentity stranger = decode;
  stranger.name = "stranger";
  stranger.names = {"stranger"};
  EXPECT_TRUE(Connect(decode).has_pool());
  v1::ConnectResponse refused = Connect(stranger);
  EXPECT_FALSE(refused.has_pool());
  EXPECT_NE(refused.no_pool_reason().find("pool_identities"), std::string::npos);
}

TEST_F(DataPlaneHandlerTest, APoolThatIsNotExportedIsOfferedToNoOne) {
  PrefixCacheOptions o = PoolOptions(/*exported=*/false);
  auto cache = PrefixCache::Create(o).value();
  KvStoreHandler handler(cache.get(), HandlerOptions(o.pool.epoch), nullptr);
  v1::ConnectRequest request;
  request.set_host_id(HostId());
  v1::ConnectResponse response;
  ASSERT_TRUE(handler.Connect(request, kAnyone, &response).ok());
  EXPECT_FALSE(response.has_pool());
  v1::ReserveRequest reserve;
  reserve.set_pages(1);
  reserve.set_epoch(o.pool.epoch);
  v1::ReserveResponse reserved;
  EXPECT_EQ(handler.Reserve(reserve, kAnyone, &reserved).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(DataPlaneHandlerTest, PagesWrittenInPlaceAreCommittedMatchedAndFetchedAsIds) {
  torch::Tensor pool = Map(Connect());
  const std::vector<int32_t> tokens = Tokens(8);
  v1::ReserveResponse reserved;
  ASSERT_TRUE(Reserve(2, &reserved).ok());
  ASSERT_EQ(reserved.pages_size(), 2);
  const std::vector<int32_t> pages(reserved.pages().begin(), reserved.pages().end());
  ASSERT_TRUE(
      WritePages(pool, pages, TokensAsPages(Kv(0, 8), kPageSize)).ok());  // through the mapping
  EXPECT_EQ(cache_->Stats().pages_cached, 0);  // nothing published before the commit

  v1::PutResponse put;
  ASSERT_TRUE(Commit(tokens, reserved.reservation_id(), &put).ok());
  EXPECT_EQ(put.inserted_tokens(), 8);
  EXPECT_EQ(handler_->reserved_pages(), 0);

  std::vector<int32_t> fetched;
  ASSERT_TRUE(FetchShared(put.lease_id(), &fetched).ok());
  EXPECT_EQ(fetched, pages);
  // The store's own copy of the pool holds what was written through the
  // mapping: it is one memory.
  EXPECT_TRUE(torch::equal(
      PagesAsTokens(ReadPages(cache_->storage(), fetched, torch::kCPU).value()), Kv(0, 8)));
  v1::StatsResponse stats;
  ASSERT_TRUE(handler_->Stats(v1::StatsRequest(), &stats).ok());
  EXPECT_EQ(stats.pool_export(), "shm");
  EXPECT_EQ(stats.epoch(), epoch_);
  EXPECT_EQ(stats.shared_put_bytes(), 2 * cache_->options().pool.layout.bytes_per_page());
  EXPECT_EQ(stats.shared_fetched_bytes(), 2 * cache_->options().pool.layout.bytes_per_page());
  EXPECT_EQ(stats.fetched_bytes(), 0);
}

TEST_F(DataPlaneHandlerTest, AStaleEpochIsRefusedEverywhere) {
  const uint64_t stale = epoch_ + 1;
  v1::ReserveResponse reserved;
  EXPECT_EQ(Reserve(1, &reserved, stale).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(Reserve(1, &reserved).ok());
  v1::PutResponse put;
  EXPECT_EQ(Commit(Tokens(4), reserved.reservation_id(), &put, stale).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(Commit(Tokens(4), reserved.reservation_id(), &put).ok());
  std::vector<int32_t> pages;
  EXPECT_EQ(FetchShared(put.lease_id(), &pages, stale).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// The in-place path (Reserve, write, commit) under the quotas per caller:
// the commit's lease counts the pages it pins, the commit stream buffers no
// bytes, and a commit the quota refuses hands its reserved pages back at
// once rather than at the reservation's expiry.
TEST_F(DataPlaneHandlerTest, ACommitCountsItsLeaseAndARefusedOneFreesItsReservation) {
  KvStoreHandlerOptions h = HandlerOptions(epoch_);
  h.quotas.max_leases = 1;
  handler_ = std::make_unique<KvStoreHandler>(cache_.get(), h, nullptr);
  const std::string who = KvStoreHandler::CallerKey(kAnyone);
  v1::ReserveResponse reserved;
  ASSERT_TRUE(Reserve(2, &reserved).ok());
  v1::PutResponse put;
  ASSERT_TRUE(Commit(Tokens(8), reserved.reservation_id(), &put).ok());
  CallerQuotas::Usage usage = handler_->quotas().UsageOf(who);
  EXPECT_EQ(usage.leases, 1);
  EXPECT_EQ(usage.pinned_pages, 2);
  EXPECT_EQ(usage.puts, 0) << "the commit stream ended";
  EXPECT_EQ(usage.put_bytes, 0);

  const int64_t free_before = FreePages();
  ASSERT_TRUE(Reserve(1, &reserved).ok());
  EXPECT_EQ(FreePages(), free_before - 1);
  v1::PutResponse refused;
  const grpc::Status over = Commit(Tokens(4, 20), reserved.reservation_id(), &refused);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << over.error_message();
  EXPECT_NE(over.error_message().find("--max_leases_per_caller"), std::string::npos);
  EXPECT_EQ(handler_->reserved_pages(), 0);
  EXPECT_EQ(FreePages(), free_before) << "the reservation's page is back at once";

  v1::ReleaseRequest release;
  release.set_lease_id(put.lease_id());
  v1::ReleaseResponse released;
  ASSERT_TRUE(handler_->Release(release, kAnyone, &released).ok());
  EXPECT_EQ(handler_->quotas().callers(), 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

// One caller cannot hold every page writers may reserve: past its share
// (--max_reserved_pages_per_caller) its Reserve is refused while others'
// go on, and what it commits, what expires and what is refused give its
// share back.
TEST_F(DataPlaneHandlerTest, ReservedPagesAreBoundedPerCaller) {
  KvStoreHandlerOptions h = HandlerOptions(epoch_);
  h.quotas.max_reserved_pages = 2;
  h.reservation_ttl = absl::Milliseconds(50);
  handler_ = std::make_unique<KvStoreHandler>(cache_.get(), h, nullptr);
  const std::string who = KvStoreHandler::CallerKey(kAnyone);
  v1::ReserveResponse first, more;
  ASSERT_TRUE(Reserve(2, &first).ok());
  const int64_t free_before = FreePages();
  const grpc::Status over = Reserve(1, &more);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << over.error_message();
  EXPECT_NE(over.error_message().find("--max_reserved_pages_per_caller"), std::string::npos);
  EXPECT_EQ(FreePages(), free_before) << "a refused Reserve takes no page";
  EXPECT_EQ(handler_->quotas().UsageOf(who).reserved_pages, 2);

  PeerIdentity other;  // another plaintext caller: another address
  other.address = "ipv4:10.0.0.9";
  v1::ReserveRequest request;
  request.set_pages(2);
  request.set_epoch(epoch_);
  v1::ReserveResponse others;
  ASSERT_TRUE(handler_->Reserve(request, other, &others).ok());

  v1::PutResponse put;  // a commit gives the share back
  ASSERT_TRUE(Commit(Tokens(8), first.reservation_id(), &put).ok());
  EXPECT_EQ(handler_->quotas().UsageOf(who).reserved_pages, 0);
  ASSERT_TRUE(Reserve(1, &more).ok());
  // So does a reservation that expires.
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  handler_->ReapExpiredLeases();
  EXPECT_EQ(handler_->quotas().UsageOf(who).reserved_pages, 0);
  EXPECT_EQ(handler_->quotas().UsageOf(KvStoreHandler::CallerKey(other)).reserved_pages, 0);
  EXPECT_EQ(handler_->reserved_pages(), 0);
  v1::ReleaseRequest release;
  release.set_lease_id(put.lease_id());
  v1::ReleaseResponse released;
  ASSERT_TRUE(handler_->Release(release, kAnyone, &released).ok());
  EXPECT_EQ(handler_->quotas().callers(), 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

TEST_F(DataPlaneHandlerTest, AWriterThatDiesLeavesNoPagePinnedOrPublished) {
  const int64_t free_before = FreePages();
  // Dies after reserving: the reservation expires and its pages go back.
  KvStoreHandlerOptions h = HandlerOptions(epoch_);
  h.reservation_ttl = absl::Milliseconds(1);
  handler_ = std::make_unique<KvStoreHandler>(cache_.get(), h, nullptr);
  v1::ReserveResponse reserved;
  ASSERT_TRUE(Reserve(3, &reserved).ok());
  EXPECT_EQ(FreePages(), free_before - 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  handler_->ReapExpiredLeases();
  EXPECT_EQ(FreePages(), free_before);
  EXPECT_EQ(handler_->reserved_pages(), 0);
  v1::PutResponse put;
  EXPECT_EQ(Commit(Tokens(12), reserved.reservation_id(), &put).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(cache_->Stats().pages_cached, 0);

  // Dies mid-commit (the header arrived, the stream broke): freed at once.
  handler_ = std::make_unique<KvStoreHandler>(cache_.get(), HandlerOptions(epoch_), nullptr);
  ASSERT_TRUE(Reserve(2, &reserved).ok());
  {
    auto session = handler_->StartPut(kAnyone);
    v1::PutRequest header;
    const std::vector<int32_t> tokens = Tokens(8);
    header.mutable_header()->mutable_tokens()->Add(tokens.begin(), tokens.end());
    *header.mutable_header()->mutable_layout() = handler_->layout();
    header.mutable_header()->set_reservation_id(reserved.reservation_id());
    header.mutable_header()->set_epoch(epoch_);
    ASSERT_TRUE(session->OnMessage(header).ok());
  }
  EXPECT_EQ(FreePages(), free_before);
  EXPECT_EQ(cache_->Stats().pages_cached, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

TEST_F(DataPlaneHandlerTest, BadCommitsAndOverlargeReservationsChangeNothing) {
  const int64_t free_before = FreePages();
  v1::ReserveResponse reserved;
  EXPECT_EQ(Reserve(0, &reserved).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Reserve(cache_->num_pages() + 1, &reserved).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Uncommitted pages are bounded over all writers.
  KvStoreHandlerOptions h = HandlerOptions(epoch_);
  h.max_reserved_pages = 2;
  handler_ = std::make_unique<KvStoreHandler>(cache_.get(), h, nullptr);
  ASSERT_TRUE(Reserve(2, &reserved).ok());
  v1::ReserveResponse more;
  EXPECT_EQ(Reserve(1, &more).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A commit of another page count than reserved frees the reservation.
  v1::PutResponse put;
  EXPECT_EQ(Commit(Tokens(4), reserved.reservation_id(), &put).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(FreePages(), free_before);
  // Someone else's reservation is not found.
  ASSERT_TRUE(Reserve(1, &reserved).ok());
  PeerIdentity other;
  other.authenticated = true;
  other.name = "other";
  other.names = {"other"};
  auto session = handler_->StartPut(other);
  v1::PutRequest header;
  const std::vector<int32_t> tokens = Tokens(4);
  header.mutable_header()->mutable_tokens()->Add(tokens.begin(), tokens.end());
  *header.mutable_header()->mutable_layout() = handler_->layout();
  header.mutable_header()->set_reservation_id(reserved.reservation_id());
  header.mutable_header()->set_epoch(epoch_);
  EXPECT_EQ(session->OnMessage(header).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(handler_->reserved_pages(), 1);
}

// ---- a RemotePrefixStore over a real server ----

// A store service on a loopback port of this process.
class StoreServer {
 public:
  // `model`: the store's model fingerprint (empty: not said).
  // `layout`: the pool's (null: PoolOptions').
  explicit StoreServer(bool exported, int port = 0, const std::string& model = "",
                       const CallerQuotaOptions& quotas = CallerQuotaOptions(),
                       const PageLayout* layout = nullptr) {
    PrefixCacheOptions o = PoolOptions(exported, 32);
    if (layout != nullptr) {
      o.pool.layout = *layout;
      o.pool.byte_budget = 32 * layout->bytes_per_page();
    }
    cache_ = PrefixCache::Create(o).value();
    KvStoreHandlerOptions h = HandlerOptions(o.pool.epoch);
    h.model_fingerprint = model;
    h.quotas = quotas;
    handler_ = std::make_unique<KvStoreHandler>(cache_.get(), h, &metrics_);
    service_ = std::make_unique<KvStoreService>(handler_.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
  }
  ~StoreServer() { server_->Shutdown(); }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  int port() const { return port_; }
  KvStoreHandler* handler() { return handler_.get(); }
  PrefixCache* cache() { return cache_.get(); }
  v1::StatsResponse Stats() {
    v1::StatsResponse stats;
    handler_->Stats(v1::StatsRequest(), &stats);
    return stats;
  }

 private:
  MetricsRegistry metrics_;
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<KvStoreHandler> handler_;
  std::unique_ptr<KvStoreService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// Rows over a pool of this process (the caller's), with the store's layout.
struct Rows {
  explicit Rows(int64_t rows = 2) {
    pool = PrefixCache::Create(PoolOptions(false, 32)).value();
    tables = BlockTables::Create(pool.get(), rows, 32).value();
  }
  std::unique_ptr<PrefixCache> pool;
  std::unique_ptr<BlockTables> tables;
};

// Stores 16 tokens from one row, then loads them into a row of other
// tables; returns what that row reads.
torch::Tensor RoundTrip(RemotePrefixStore& store, int32_t first_token) {
  const std::vector<int32_t> tokens = Tokens(16, first_token);
  Rows writer;
  EXPECT_TRUE(writer.tables->PrepareWrite(0, 0, 16).ok());
  EXPECT_TRUE(writer.tables->WriteTokens(0, 0, Kv(0, 16, first_token)).ok());
  writer.tables->set_length(0, 16);
  PrefixStore::RowTokens row{0, tokens, PrefixStore::kNoLease, 0, ""};
  auto stored = store.Store({&row, 1}, *writer.tables, /*pin=*/true, "");
  EXPECT_TRUE(stored.ok()) << stored.status();
  if (!stored.ok()) return {};
  EXPECT_EQ((*stored)[0].stored_tokens, 16);

  Rows reader;
  auto match = store.MatchPrefix(tokens, "");
  EXPECT_TRUE(match.ok());
  EXPECT_EQ(match->matched_tokens, 16);
  PrefixStore::LeasedRow load{1, match->lease_id, 16};
  absl::Status loaded = store.Load({&load, 1}, *reader.tables);
  EXPECT_TRUE(loaded.ok()) << loaded;
  store.Release(match->lease_id).IgnoreError();
  store.Release((*stored)[0].lease_id).IgnoreError();
  if (!loaded.ok()) return {};
  return reader.tables->ReadTokens(1, 0, 16).value();
}

// A store of the version before MatchBatch and the Release of many, over a
// current handler: it answers Match, and Release of `lease_id` alone (its
// parser drops `lease_ids`, a field it does not know); anything else is
// UNIMPLEMENTED, as the generated service answers a method it lacks.
class OlderStoreService final : public v1::KvStore::CallbackService {
 public:
  explicit OlderStoreService(KvStoreHandler* handler) : handler_(handler) {}
  grpc::ServerUnaryReactor* Match(grpc::CallbackServerContext* context,
                                  const v1::MatchRequest* request,
                                  v1::MatchResponse* response) override {
    return Done(context, handler_->Match(*request, PeerIdentity(), response));
  }
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* context,
                                    const v1::ReleaseRequest* request,
                                    v1::ReleaseResponse* response) override {
    v1::ReleaseRequest known;
    known.set_lease_id(request->lease_id());
    return Done(context, handler_->Release(known, PeerIdentity(), response));
  }

 private:
  static grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context,
                                        const grpc::Status& status) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }
  KvStoreHandler* handler_;
};

KvStoreClientOptions ClientOptions(const std::string& target,
                                   KvStoreClientOptions::Transport transport) {
  KvStoreClientOptions o;
  o.target = target;
  o.transport = transport;
  return o;
}

// A client of another model than the store's refuses the layouts it answers
// (Match, Connect) with both models named and leaves no lease behind, so
// its caller computes the prompt itself; a client of the same model, or one
// that does not say, moves pages as before.
TEST(RemoteDataPlaneTest, AStoreOfAnotherModelIsRefused) {
  StoreServer server(/*exported=*/true, 0, "weights:00000000000000aa 10 bytes");
  KvStoreClientOptions o = ClientOptions(server.target(), KvStoreClientOptions::Transport::kAuto);
  o.model_fingerprint = "weights:00000000000000bb 10 bytes";
  KvStoreClient other(o);
  const absl::StatusOr<KvStoreClient::Match> match = other.MatchPrefix(Tokens(8));
  EXPECT_EQ(match.status().code(), absl::StatusCode::kFailedPrecondition) << match.status();
  EXPECT_NE(match.status().message().find("00aa"), absl::string_view::npos);
  EXPECT_NE(match.status().message().find("00bb"), absl::string_view::npos);
  EXPECT_NE(match.status().message().find("--model"), absl::string_view::npos);
  EXPECT_EQ(other.Pool().status().code(), absl::StatusCode::kFailedPrecondition);
  RemotePrefixStore refused(&other);
  EXPECT_EQ(refused.MatchPrefix(Tokens(8), "").status().code(),
            absl::StatusCode::kFailedPrecondition);

  o.model_fingerprint = "weights:00000000000000aa 10 bytes";
  KvStoreClient same(o);
  RemotePrefixStore store(&same);
  EXPECT_TRUE(torch::equal(RoundTrip(store, 3), Kv(0, 16, 3)));
  o.model_fingerprint = "";
  KvStoreClient unsaid(o);
  RemotePrefixStore store2(&unsaid);
  EXPECT_TRUE(torch::equal(RoundTrip(store2, 5), Kv(0, 16, 5)));
  EXPECT_EQ(server.Stats().active_leases(), 0);
}

TEST(RemoteDataPlaneTest, SharedMemoryAndBytesMoveTheSamePages) {
  StoreServer server(/*exported=*/true);
  using T = KvStoreClientOptions::Transport;
  KvStoreClient shm_client(ClientOptions(server.target(), T::kAuto));
  RemotePrefixStore shm(&shm_client);
  EXPECT_TRUE(torch::equal(RoundTrip(shm, 1), Kv(0, 16, 1)));
  EXPECT_EQ(shm_client.TransportDescription(), "shm");
  v1::StatsResponse after_shm = server.Stats();
  EXPECT_GT(after_shm.shared_put_bytes(), 0);
  EXPECT_GT(after_shm.shared_fetched_bytes(), 0);
  EXPECT_EQ(after_shm.put_bytes(), 0);
  EXPECT_EQ(after_shm.fetched_bytes(), 0);

  KvStoreClient bytes_client(ClientOptions(server.target(), T::kBytes));
  RemotePrefixStore bytes(&bytes_client);
  EXPECT_TRUE(torch::equal(RoundTrip(bytes, 20), Kv(0, 16, 20)));
  EXPECT_EQ(bytes_client.TransportDescription(), "bytes (forced)");
  v1::StatsResponse after_bytes = server.Stats();
  EXPECT_EQ(after_bytes.shared_put_bytes(), after_shm.shared_put_bytes());
  EXPECT_GT(after_bytes.put_bytes(), 0);
  EXPECT_GT(after_bytes.fetched_bytes(), 0);
}

TEST(RemoteDataPlaneTest, AStoreThatDoesNotExportIsUsedOverBytesOrRefusedWhenForced) {
  StoreServer server(/*exported=*/false);
  using T = KvStoreClientOptions::Transport;
  KvStoreClient automatic(ClientOptions(server.target(), T::kAuto));
  RemotePrefixStore store(&automatic);
  EXPECT_TRUE(torch::equal(RoundTrip(store, 3), Kv(0, 16, 3)));
  EXPECT_NE(automatic.TransportDescription().find("not exported"), std::string::npos);

  KvStoreClient forced(ClientOptions(server.target(), T::kShm));
  auto pool = forced.Pool();
  EXPECT_EQ(pool.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(pool.status().message().find("not exported"), std::string::npos);
}

TEST(RemoteDataPlaneTest, ARestartedStoreIsRefusedOnceThenMappedAgain) {
  using T = KvStoreClientOptions::Transport;
  auto first = std::make_unique<StoreServer>(/*exported=*/true);
  const int port = first->port();
  KvStoreClient client(ClientOptions(first->target(), T::kAuto));
  RemotePrefixStore store(&client);
  EXPECT_TRUE(torch::equal(RoundTrip(store, 5), Kv(0, 16, 5)));
  auto old_pool = client.Pool().value();
  first.reset();
  StoreServer second(/*exported=*/true, port);  // a new life, a new epoch

  // The old mapping is refused (the caller would compute instead)...
  Rows writer;
  ASSERT_TRUE(writer.tables->PrepareWrite(0, 0, 16).ok());
  ASSERT_TRUE(writer.tables->WriteTokens(0, 0, Kv(0, 16, 7)).ok());
  writer.tables->set_length(0, 16);
  const std::vector<int32_t> tokens = Tokens(16, 7);
  PrefixStore::RowTokens row{0, tokens, PrefixStore::kNoLease, 0, ""};
  absl::Status refused;
  for (int attempt = 0; attempt < 150; ++attempt) {  // until the channel reconnects
    refused = store.Store({&row, 1}, *writer.tables, true, "").status();
    if (refused.code() != absl::StatusCode::kUnavailable) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  // ...and the next call maps the new pool.
  auto new_pool = client.Pool().value();
  ASSERT_NE(new_pool, nullptr);
  EXPECT_NE(new_pool->epoch, old_pool->epoch);
  EXPECT_TRUE(torch::equal(RoundTrip(store, 9), Kv(0, 16, 9)));
}

// ---- batches ----

TEST_F(DataPlaneHandlerTest, ABatchReservationIsGrantedInOrderWhileItFits) {
  KvStoreHandlerOptions h = HandlerOptions(epoch_);
  h.quotas.max_reserved_pages = 3;
  handler_ = std::make_unique<KvStoreHandler>(cache_.get(), h, nullptr);
  const int64_t free_before = FreePages();
  v1::ReserveRequest request;
  request.set_epoch(epoch_);
  for (int64_t pages : {2, 1, 2}) request.add_batch(pages);
  v1::ReserveResponse reserved;
  ASSERT_TRUE(handler_->Reserve(request, kAnyone, &reserved).ok());
  ASSERT_EQ(reserved.reservations_size(), 2);  // 2 + 1; the third would pass 3
  EXPECT_EQ(reserved.reservations(0).pages_size(), 2);
  EXPECT_EQ(reserved.reservations(1).pages_size(), 1);
  EXPECT_NE(reserved.refused().find("--max_reserved_pages_per_caller"), std::string::npos);
  EXPECT_EQ(reserved.reservation_id(), 0u);
  EXPECT_EQ(FreePages(), free_before - 3);
  EXPECT_EQ(handler_->calls().reserve.load(), 1);

  // Nothing granted: the call fails as one reservation would.
  v1::ReserveResponse none;
  const grpc::Status full = handler_->Reserve(request, kAnyone, &none);
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << full.error_message();
  EXPECT_EQ(FreePages(), free_before - 3);

  // Bad batches change nothing.
  for (const std::vector<int64_t>& bad :
       std::vector<std::vector<int64_t>>{{1, 0}, {-1}, {cache_->num_pages() + 1}}) {
    v1::ReserveRequest r;
    r.set_epoch(epoch_);
    r.mutable_batch()->Add(bad.begin(), bad.end());
    v1::ReserveResponse ignored;
    EXPECT_EQ(handler_->Reserve(r, kAnyone, &ignored).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  request.set_pages(1);  // both pages and batch
  EXPECT_EQ(handler_->Reserve(request, kAnyone, &none).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(FreePages(), free_before - 3);
  EXPECT_EQ(handler_->reserved_pages(), 3);
}

// One Commit call: each header commits alone (its own lease and page ids,
// or its own error, its reservation then freed), and abandoned
// reservations go back at once; nothing stays pinned or reserved.
TEST_F(DataPlaneHandlerTest, ACommitCallCommitsEachRowAloneAndFreesWhatItAbandons) {
  const int64_t free_before = FreePages();
  torch::Tensor pool = Map(Connect());
  v1::ReserveRequest request;
  request.set_epoch(epoch_);
  for (int64_t pages : {2, 1, 1}) request.add_batch(pages);
  v1::ReserveResponse reserved;
  ASSERT_TRUE(handler_->Reserve(request, kAnyone, &reserved).ok());
  ASSERT_EQ(reserved.reservations_size(), 3);
  const v1::ReservedPages& good = reserved.reservations(0);
  const std::vector<int32_t> pages(good.pages().begin(), good.pages().end());
  ASSERT_TRUE(WritePages(pool, pages, TokensAsPages(Kv(0, 8), kPageSize)).ok());

  v1::CommitRequest commit;
  v1::PutHeader* ok = commit.add_headers();
  const std::vector<int32_t> tokens = Tokens(8);
  ok->mutable_tokens()->Add(tokens.begin(), tokens.end());
  *ok->mutable_layout() = handler_->layout();
  ok->set_reservation_id(good.reservation_id());
  ok->set_epoch(epoch_);
  v1::PutHeader* wrong = commit.add_headers();  // 2 new pages, a 1-page reservation
  *wrong = *ok;
  wrong->clear_tokens();
  const std::vector<int32_t> other = Tokens(8, 20);
  wrong->mutable_tokens()->Add(other.begin(), other.end());
  wrong->set_reservation_id(reserved.reservations(1).reservation_id());
  commit.add_abandoned_reservation_ids(reserved.reservations(2).reservation_id());
  v1::CommitResponse committed;
  ASSERT_TRUE(handler_->Commit(commit, kAnyone, &committed).ok());
  ASSERT_EQ(committed.results_size(), 2);
  EXPECT_EQ(committed.results(0).code(), 0) << committed.results(0).message();
  const v1::PutResponse& put = committed.results(0).response();
  EXPECT_EQ(put.inserted_tokens(), 8);
  EXPECT_EQ(put.shared().epoch(), epoch_);
  EXPECT_EQ(std::vector<int32_t>(put.shared().pages().begin(), put.shared().pages().end()), pages);
  EXPECT_EQ(committed.results(1).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_FALSE(committed.results(1).has_response());
  EXPECT_EQ(handler_->reserved_pages(), 0);
  EXPECT_EQ(FreePages(), free_before - 2);  // only the committed row's pages
  EXPECT_EQ(handler_->calls().commit.load(), 1);
  EXPECT_EQ(handler_->calls().put.load(), 0);

  v1::ReleaseRequest release;
  release.set_lease_id(put.lease_id());
  v1::ReleaseResponse released;
  ASSERT_TRUE(handler_->Release(release, kAnyone, &released).ok());
  EXPECT_EQ(cache_->Stats().pages_pinned, 0);
  EXPECT_EQ(handler_->quotas().callers(), 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

// A Put over bytes that names the store's epoch is answered with its page
// ids too; one that does not is not.
TEST_F(DataPlaneHandlerTest, APutNamingTheEpochIsAnsweredWithItsPageIds) {
  for (uint64_t epoch : {epoch_, uint64_t{0}}) {
    auto session = handler_->StartPut(kAnyone);
    v1::PutRequest header;
    const std::vector<int32_t> tokens = Tokens(4, epoch == 0 ? 30 : 10);
    header.mutable_header()->mutable_tokens()->Add(tokens.begin(), tokens.end());
    *header.mutable_header()->mutable_layout() = handler_->layout();
    header.mutable_header()->set_epoch(epoch);
    ASSERT_TRUE(session->OnMessage(header).ok());
    const torch::Tensor page = TokensAsPages(Kv(0, 4), kPageSize);
    v1::PutRequest chunk;
    chunk.mutable_chunk()->set_data(page.data_ptr(), page.nbytes());
    ASSERT_TRUE(session->OnMessage(chunk).ok());
    v1::PutResponse put;
    ASSERT_TRUE(session->Finish(&put).ok());
    EXPECT_EQ(put.has_shared(), epoch != 0);
    if (epoch != 0) {
      std::vector<int32_t> fetched;
      ASSERT_TRUE(FetchShared(put.lease_id(), &fetched).ok());
      EXPECT_EQ(std::vector<int32_t>(put.shared().pages().begin(), put.shared().pages().end()),
                fetched);
    }
  }
}

// Writes `rows` rows of `tokens_per_row` tokens each (row r's tokens start
// at 1 + 10 r) and stores them in one Store call.
absl::StatusOr<std::vector<PrefixStore::Stored>> StoreRows(
    RemotePrefixStore& store, Rows& writer, int64_t rows, int64_t tokens_per_row,
    std::vector<std::vector<int32_t>>* tokens) {
  std::vector<PrefixStore::RowTokens> stores;
  tokens->clear();
  for (int64_t r = 0; r < rows; ++r) tokens->push_back(Tokens(tokens_per_row, 1 + 10 * r));
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_TRUE(writer.tables->PrepareWrite(r, 0, tokens_per_row).ok());
    EXPECT_TRUE(writer.tables->WriteTokens(r, 0, Kv(0, tokens_per_row, 100 * r)).ok());
    writer.tables->set_length(r, tokens_per_row);
    stores.push_back({r, (*tokens)[r], PrefixStore::kNoLease, 0, ""});
  }
  return store.Store(stores, *writer.tables, /*pin=*/true, "");
}

// A store that exports its pool, a client that maps it, and the prefix
// store over that client.
class MappedStoreTest : public ::testing::Test {
 protected:
  StoreServer server{/*exported=*/true};
  KvStoreClient client{ClientOptions(server.target(), KvStoreClientOptions::Transport::kAuto)};
  RemotePrefixStore store{&client};
};

// A Store of four rows takes one Reserve and one Commit call, no Put; each
// row's lease comes with its page ids, which a reader of the mapped pool
// gathers with no Fetch: the same pages ReadLeased (a Fetch) reads.
TEST_F(MappedStoreTest, ABatchOfRowsTakesOneReserveAndOneCommit) {
  Rows writer(4);
  std::vector<std::vector<int32_t>> tokens;
  auto stored = StoreRows(store, writer, 4, 8, &tokens);
  ASSERT_TRUE(stored.ok()) << stored.status();
  v1::StatsResponse stats = server.Stats();
  EXPECT_EQ(stats.reserve_calls(), 1);
  EXPECT_EQ(stats.commit_calls(), 1);
  EXPECT_EQ(stats.put_calls(), 0);
  EXPECT_EQ(stats.reserved_pages(), 0);
  const uint64_t epoch = client.Pool().value()->epoch;
  for (int64_t r = 0; r < 4; ++r) {
    const PrefixStore::Stored& row = (*stored)[r];
    ASSERT_TRUE(row.not_stored.ok()) << row.not_stored;
    EXPECT_EQ(row.stored_tokens, 8);
    EXPECT_EQ(row.pool_pages.epoch, epoch);
    ASSERT_EQ(row.pool_pages.pages.size(), 2u);
    auto gathered = store.ReadPoolPages(row.pool_pages, torch::kCPU);
    ASSERT_TRUE(gathered.ok()) << gathered.status();
    auto pool = store.PoolOf(row.pool_pages);  // what a scheduler copies from
    ASSERT_TRUE(pool.ok()) << pool.status();
    EXPECT_TRUE(
        torch::equal(ReadPages(*pool, row.pool_pages.pages, torch::kCPU).value(), *gathered));
    EXPECT_EQ(server.Stats().fetch_calls(), r);                  // only the reference reads below
    auto fetched = store.ReadLeased(row.lease_id, torch::kCPU);  // the reference
    ASSERT_TRUE(fetched.ok()) << fetched.status();
    EXPECT_TRUE(torch::equal(*gathered, *fetched));
    EXPECT_TRUE(torch::equal(PagesAsTokens(*gathered), Kv(0, 8, 100 * r)));
  }
  EXPECT_EQ(server.Stats().fetch_calls(), 4);

  // Ids of another epoch, or outside the pool, are refused, not read.
  PrefixStore::PoolPages stale = (*stored)[0].pool_pages;
  stale.epoch ^= 1;
  EXPECT_EQ(store.ReadPoolPages(stale, torch::kCPU).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.PoolOf(stale).status().code(), absl::StatusCode::kFailedPrecondition);
  PrefixStore::PoolPages outside = (*stored)[0].pool_pages;
  outside.pages[0] = 1 << 20;
  EXPECT_EQ(store.ReadPoolPages(outside, torch::kCPU).status().code(),
            absl::StatusCode::kInvalidArgument);
  KvStoreClient bytes_client(
      ClientOptions(server.target(), KvStoreClientOptions::Transport::kBytes));
  RemotePrefixStore bytes(&bytes_client);
  EXPECT_EQ(bytes.ReadPoolPages((*stored)[0].pool_pages, torch::kCPU).status().code(),
            absl::StatusCode::kFailedPrecondition);

  for (const PrefixStore::Stored& row : *stored) ASSERT_TRUE(store.Release(row.lease_id).ok());
  stats = server.Stats();
  EXPECT_EQ(stats.active_leases(), 0);
  EXPECT_EQ(stats.pages_pinned(), 0);
}

// With the pool mapped, a Match names its pages (those the Store returned),
// and a Load given them copies them page to page with no Fetch: the row
// reads what the writer wrote. A bytes client gets no ids.
TEST_F(MappedStoreTest, AMatchNamesItsPagesAndALoadNeedsNoFetch) {
  Rows writer(1);
  std::vector<std::vector<int32_t>> tokens;
  auto stored = StoreRows(store, writer, 1, 16, &tokens);
  ASSERT_TRUE(stored.ok()) << stored.status();
  auto match = store.MatchPrefix(tokens[0], "");
  ASSERT_TRUE(match.ok()) << match.status();
  EXPECT_EQ(match->matched_tokens, 16);
  EXPECT_EQ(match->pool_pages.epoch, (*stored)[0].pool_pages.epoch);
  EXPECT_EQ(match->pool_pages.pages, (*stored)[0].pool_pages.pages);
  const int64_t fetches = server.Stats().fetch_calls();
  Rows reader;
  PrefixStore::LeasedRow load{1, match->lease_id, 16, match->pool_pages};
  ASSERT_TRUE(store.Load({&load, 1}, *reader.tables).ok());
  EXPECT_EQ(server.Stats().fetch_calls(), fetches);
  EXPECT_EQ(reader.tables->length(1), 16);
  EXPECT_TRUE(torch::equal(reader.tables->ReadTokens(1, 0, 16).value(),
                           writer.tables->ReadTokens(0, 0, 16).value()));
  // Ids of another epoch are not used: the Load asks for them.
  Rows again;
  load.pool_pages.epoch ^= 1;
  ASSERT_TRUE(store.Load({&load, 1}, *again.tables).ok());
  EXPECT_EQ(server.Stats().fetch_calls(), fetches + 1);
  EXPECT_TRUE(torch::equal(again.tables->ReadTokens(1, 0, 16).value(),
                           writer.tables->ReadTokens(0, 0, 16).value()));
  KvStoreClient bytes_client(
      ClientOptions(server.target(), KvStoreClientOptions::Transport::kBytes));
  auto bytes_match = bytes_client.MatchPrefix(tokens[0]);
  ASSERT_TRUE(bytes_match.ok());
  EXPECT_TRUE(bytes_match->pool_pages.empty());
  ASSERT_TRUE(bytes_client.Release(bytes_match->lease_id).ok());
  ASSERT_TRUE(store.Release(match->lease_id).ok());
  ASSERT_TRUE(store.Release((*stored)[0].lease_id).ok());
  EXPECT_EQ(server.Stats().active_leases(), 0);
}

// The store grants the first rows of a batch and refuses the rest (the
// caller's reservation quota): those are not stored, with the store's
// reason, and once the stored row's lease ends nothing is held.
TEST(RemoteDataPlaneTest, RowsABatchReservationRefusesAreNotStoredAndHoldNothing) {
  CallerQuotaOptions quotas;
  quotas.max_reserved_pages = 3;
  StoreServer server(/*exported=*/true, 0, "", quotas);
  KvStoreClient client(ClientOptions(server.target(), KvStoreClientOptions::Transport::kAuto));
  RemotePrefixStore store(&client);
  Rows writer(3);
  std::vector<std::vector<int32_t>> tokens;
  auto stored = StoreRows(store, writer, 3, 8, &tokens);  // 2 pages a row
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE((*stored)[0].not_stored.ok());
  EXPECT_EQ((*stored)[0].stored_tokens, 8);
  for (int r : {1, 2}) {
    EXPECT_EQ((*stored)[r].not_stored.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE((*stored)[r].not_stored.message().find("--max_reserved_pages_per_caller"),
              absl::string_view::npos);
    EXPECT_EQ((*stored)[r].lease_id, PrefixStore::kNoLease);
  }
  v1::StatsResponse stats = server.Stats();
  EXPECT_EQ(stats.reserve_calls(), 1);
  EXPECT_EQ(stats.reserved_pages(), 0);
  EXPECT_EQ(stats.pages_cached(), 2);
  ASSERT_TRUE(store.Release((*stored)[0].lease_id).ok());
  stats = server.Stats();
  EXPECT_EQ(stats.active_leases(), 0);
  EXPECT_EQ(stats.pages_pinned(), 0);
}

// A client meeting a store from before MatchBatch (a rolling upgrade that
// has not reached the store yet) matches a batch one query a call and
// releases one lease a call, and leaves no lease behind.
TEST(RemoteDataPlaneTest, AnOlderStoreIsMatchedAndReleasedOneCallAtATime) {
  StoreServer server(/*exported=*/false);
  KvStoreClient seeding(ClientOptions(server.target(), KvStoreClientOptions::Transport::kBytes));
  RemotePrefixStore store(&seeding);
  RoundTrip(store, 1);  // 16 tokens cached, no lease left
  ASSERT_EQ(server.Stats().active_leases(), 0);

  OlderStoreService older(server.handler());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&older);
  std::unique_ptr<grpc::Server> old_server = builder.BuildAndStart();
  KvStoreClient client(
      ClientOptions(absl::StrCat("127.0.0.1:", port), KvStoreClientOptions::Transport::kBytes));
  const std::vector<int32_t> cached = Tokens(16, 1);
  const std::vector<int32_t> other = Tokens(8, 30);
  const int64_t matches_before = server.Stats().match_calls();
  absl::StatusOr<std::vector<KvStoreClient::Match>> matches =
      client.MatchPrefixes({{cached, ""}, {other, ""}, {cached, ""}});
  ASSERT_TRUE(matches.ok()) << matches.status();
  ASSERT_EQ(matches->size(), 3u);
  EXPECT_EQ((*matches)[0].matched_tokens, 16);
  EXPECT_EQ((*matches)[1].matched_tokens, 0);
  EXPECT_EQ((*matches)[2].matched_tokens, 16);
  EXPECT_EQ(server.Stats().match_calls() - matches_before, 3);  // one Match a query
  EXPECT_EQ(server.Stats().active_leases(), 2);
  std::vector<uint64_t> leases;
  for (const KvStoreClient::Match& m : *matches) leases.push_back(m.lease_id);
  EXPECT_TRUE(client.Release(leases).ok());
  EXPECT_EQ(server.Stats().active_leases(), 0);
  // And again, now that the client knows: no MatchBatch is tried.
  matches = client.MatchPrefixes({{cached, ""}, {cached, ""}});
  ASSERT_TRUE(matches.ok()) << matches.status();
  EXPECT_EQ(server.Stats().active_leases(), 2);
  leases.clear();
  for (const KvStoreClient::Match& m : *matches) leases.push_back(m.lease_id);
  EXPECT_TRUE(client.Release(leases).ok());
  EXPECT_EQ(server.Stats().active_leases(), 0);
  old_server->Shutdown();
}

// The store's page index, mapped with its pool: what the store holds is
// read without a call (each namespace apart), and a client over bytes
// cannot tell.
TEST_F(MappedStoreTest, ThePageIndexTellsWhatTheStoreHoldsWithoutACall) {
  const std::vector<int32_t> cold = Tokens(16, 30);
  ASSERT_EQ(store.CachedTokensHint(cold, ""), std::optional<int64_t>(0));
  Rows writer(1);
  std::vector<std::vector<int32_t>> tokens;
  auto stored = StoreRows(store, writer, 1, 16, &tokens);
  ASSERT_TRUE(stored.ok()) << stored.status();
  const int64_t matches = server.Stats().match_calls();
  EXPECT_EQ(store.CachedTokensHint(tokens[0], ""), std::optional<int64_t>(16));
  std::vector<int32_t> longer = tokens[0];
  longer.insert(longer.end(), {7, 8, 9, 10, 11});
  EXPECT_EQ(store.CachedTokensHint(longer, ""), std::optional<int64_t>(16));
  std::vector<int32_t> branch = tokens[0];
  branch[9] = (branch[9] + 1) % 50;  // inside page 2
  EXPECT_EQ(store.CachedTokensHint(branch, ""), std::optional<int64_t>(8));
  EXPECT_EQ(store.CachedTokensHint(tokens[0], "tenant"), std::optional<int64_t>(0));
  EXPECT_EQ(server.Stats().match_calls(), matches) << "a hint asked the store";
  KvStoreClient bytes_client(
      ClientOptions(server.target(), KvStoreClientOptions::Transport::kBytes));
  RemotePrefixStore bytes_store(&bytes_client);
  EXPECT_EQ(bytes_store.CachedTokensHint(tokens[0], ""), std::nullopt);
  ASSERT_TRUE(store.Release((*stored)[0].lease_id).ok());
}

// A row takes what the store caches through its page index, with no call
// and no lease: the pages the writer wrote, each namespace apart; once the
// store evicted them the index offers nothing and the row stays empty.
TEST_F(MappedStoreTest, ARowTakesCachedPagesByTheIndexWithoutACallOrALease) {
  Rows writer(1);
  std::vector<std::vector<int32_t>> tokens;
  auto stored = StoreRows(store, writer, 1, 16, &tokens);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_TRUE(store.Release((*stored)[0].lease_id).ok());
  const v1::StatsResponse before = server.Stats();
  Rows reader(3);
  std::vector<int32_t> longer = tokens[0];
  longer.insert(longer.end(), {7, 8, 9});
  EXPECT_EQ(store.LoadUnleased(0, longer, "", *reader.tables), 16);
  EXPECT_EQ(reader.tables->length(0), 16);
  EXPECT_TRUE(torch::equal(reader.tables->ReadTokens(0, 0, 16).value(),
                           writer.tables->ReadTokens(0, 0, 16).value()));
  std::vector<int32_t> branch = tokens[0];
  branch[9] = (branch[9] + 1) % 50;  // inside page 3: pages 1 and 2 alone
  EXPECT_EQ(store.LoadUnleased(1, branch, "", *reader.tables), 8);
  EXPECT_TRUE(torch::equal(reader.tables->ReadTokens(1, 0, 8).value(),
                           writer.tables->ReadTokens(0, 0, 8).value()));
  // Rows of another page size take the same tokens by position.
  PrefixCacheOptions wide = PoolOptions(false, 32);
  wide.pool.layout.page_size = 2 * kPageSize;
  wide.pool.byte_budget = 32 * wide.pool.layout.bytes_per_page();
  std::unique_ptr<PrefixCache> wide_pool = PrefixCache::Create(wide).value();
  std::unique_ptr<BlockTables> wide_rows = BlockTables::Create(wide_pool.get(), 1, 32).value();
  EXPECT_EQ(store.LoadUnleased(0, tokens[0], "", *wide_rows), 16);
  EXPECT_TRUE(torch::equal(wide_rows->ReadTokens(0, 0, 16).value(),
                           writer.tables->ReadTokens(0, 0, 16).value()));
  EXPECT_EQ(store.LoadUnleased(2, tokens[0], "tenant", *reader.tables), 0);
  EXPECT_EQ(reader.tables->length(2), 0);
  EXPECT_EQ(store.LoadUnleased(0, tokens[0], "", *reader.tables), 0) << "a row not empty";
  const v1::StatsResponse after = server.Stats();
  EXPECT_EQ(after.match_calls(), before.match_calls());
  EXPECT_EQ(after.fetch_calls(), before.fetch_calls());
  EXPECT_EQ(after.active_leases(), 0);
  // Evicted: nothing to take.
  EXPECT_EQ(server.cache()->EvictAll(), 4);  // its pages of 4 tokens
  reader.tables->Reset(0);
  EXPECT_EQ(store.LoadUnleased(0, tokens[0], "", *reader.tables), 0);
  EXPECT_EQ(reader.tables->length(0), 0);
  KvStoreClient bytes_client(
      ClientOptions(server.target(), KvStoreClientOptions::Transport::kBytes));
  RemotePrefixStore bytes_store(&bytes_client);
  EXPECT_EQ(bytes_store.LoadUnleased(2, tokens[0], "", *reader.tables), 0);
}

// Several rows in one LoadUnleasedRows: each takes what the index offers
// it (a longer prompt its cached pages, a branch the pages before it,
// another namespace and a row not empty nothing), in order, with no call.
TEST_F(MappedStoreTest, RowsLoadedTogetherEachTakeTheirOwnCachedPages) {
  Rows writer(2);
  std::vector<std::vector<int32_t>> tokens;
  auto stored = StoreRows(store, writer, 2, 16, &tokens);
  ASSERT_TRUE(stored.ok()) << stored.status();
  for (const PrefixStore::Stored& row : *stored) ASSERT_TRUE(store.Release(row.lease_id).ok());
  const v1::StatsResponse before = server.Stats();
  Rows reader(5);
  ASSERT_TRUE(reader.tables->WriteTokens(4, 0, writer.tables->ReadTokens(0, 0, 4).value()).ok());
  reader.tables->set_length(4, 4);
  std::vector<int32_t> longer = tokens[1];
  longer.insert(longer.end(), {7, 8, 9});
  std::vector<int32_t> branch = tokens[0];
  branch[9] = (branch[9] + 1) % 50;  // inside page 3: pages 1 and 2 alone
  const std::vector<PrefixStore::UnleasedLoad> loads = {{0, tokens[0], ""},
                                                        {1, tokens[0], "tenant"},
                                                        {2, longer, ""},
                                                        {3, branch, ""},
                                                        {4, tokens[1], ""}};
  EXPECT_EQ(store.LoadUnleasedRows(loads, *reader.tables), (std::vector<int64_t>{16, 0, 16, 8, 0}));
  EXPECT_TRUE(torch::equal(reader.tables->ReadTokens(0, 0, 16).value(),
                           writer.tables->ReadTokens(0, 0, 16).value()));
  EXPECT_EQ(reader.tables->length(1), 0);
  EXPECT_TRUE(torch::equal(reader.tables->ReadTokens(2, 0, 16).value(),
                           writer.tables->ReadTokens(1, 0, 16).value()));
  EXPECT_TRUE(torch::equal(reader.tables->ReadTokens(3, 0, 8).value(),
                           writer.tables->ReadTokens(0, 0, 8).value()));
  EXPECT_EQ(reader.tables->length(4), 4) << "a row not empty is left as it was";
  const v1::StatsResponse after = server.Stats();
  EXPECT_EQ(after.match_calls(), before.match_calls());
  EXPECT_EQ(after.fetch_calls(), before.fetch_calls());
  EXPECT_EQ(after.active_leases(), 0);
}

// A prefill over a store whose index it maps asks for no match where the
// index serves its rows (LoadUnleased: the same logits as computing them),
// asks where prompts of the batch share a page, and over bytes (no index)
// every batch with a page to match asks. The store of a row loaded without
// a lease matches it itself, after the first token.
TEST(RemoteDataPlaneTest, APrefillAsksTheStoreOnlyForPagesItsIndexShows) {
  std::unique_ptr<Gpt2Model> model = testing::TinyModel();
  const PageLayout layout = KvPageLayout(model->config(), model->options().dtype, kPageSize);
  StoreServer server(/*exported=*/true, 0, "", CallerQuotaOptions(), &layout);
  KvStoreClient client(ClientOptions(server.target(), KvStoreClientOptions::Transport::kAuto));
  RemotePrefixStore store(&client);
  PrefixPrefill prefill(*model, store, /*chunk=*/0);
  int64_t matches_at_logits = -1;  // the store's match calls when the logits were made
  auto run = [&](const std::vector<std::vector<int>>& prompts) {
    std::unique_ptr<KvCache> rows =
        KvCache::Create(model->config(), static_cast<int64_t>(prompts.size()), 64,
                        model->options().dtype, model->options().device, kPageSize)
            .value();
    absl::StatusOr<PrefixPrefillResult> result = prefill.Run(
        prompts, *rows, /*keep_leases=*/false, {}, "", [&](const std::vector<torch::Tensor>&) {
          matches_at_logits = server.Stats().match_calls();
        });
    EXPECT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(result->store_status.ok()) << result->store_status;
    return *std::move(result);
  };
  std::vector<int> a(19);
  for (int i = 0; i < 19; ++i) a[i] = (i * 7 + 3) % 50;
  const PrefixPrefillResult cold = run({a});
  EXPECT_FALSE(cold.store_asked);
  EXPECT_EQ(server.Stats().match_calls(), 0);
  EXPECT_EQ(cold.stored[0].stored_tokens, 16);  // stored all the same
  const PrefixPrefillResult warm = run({a});
  EXPECT_TRUE(warm.store_asked);
  EXPECT_EQ(warm.reused_tokens[0], 16);
  EXPECT_EQ(warm.unleased_rows, 1);
  EXPECT_EQ(matches_at_logits, 0) << "a match before the first token";
  EXPECT_EQ(server.Stats().active_leases(), 0);
  EXPECT_TRUE(torch::allclose(warm.logits[0], cold.logits[0], 1e-4, 1e-4));
  // Two new prompts sharing a page: the branch point is computed once
  // through the store, so they ask.
  std::vector<int> b1(10, 41), b2(10, 41);
  b2[8] = 42;
  const PrefixPrefillResult shared = run({b1, b2});
  EXPECT_TRUE(shared.store_asked);
  // Over bytes no index: a new prompt asks.
  KvStoreClient bytes_client(
      ClientOptions(server.target(), KvStoreClientOptions::Transport::kBytes));
  RemotePrefixStore bytes_store(&bytes_client);
  PrefixPrefill over_bytes(*model, bytes_store, /*chunk=*/0);
  std::unique_ptr<KvCache> rows = KvCache::Create(model->config(), 1, 64, model->options().dtype,
                                                  model->options().device, kPageSize)
                                      .value();
  std::vector<int> c(13, 17);
  absl::StatusOr<PrefixPrefillResult> asked = over_bytes.Run({c}, *rows, false, {}, "", nullptr);
  ASSERT_TRUE(asked.ok()) << asked.status();
  EXPECT_TRUE(asked->store_asked);
}

}  // namespace kv_data_plane_test
}  // namespace nanoserve
