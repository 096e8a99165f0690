// Integration: the three service binaries over mutual TLS, with a throwaway
// CA and certificates for CN=kv-store, prefill, decode and client made by
// openssl at test time (tests/test_util/tls_pki.h). A Generate through all
// three gets the offline engine's greedy tokens (as the plaintext stack
// does, services_test.cc) with the store in use; a caller without a
// certificate of the CA is refused; the store takes Put only from prefill;
// a lease is usable only by the identities it was taken by and for.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "base/server_runner.h"
#include "client/service_client.h"
#include "client/subprocess.h"
#include "engine/checkpoint.h"
#include "engine/generate.h"
#include "engine/model_loader.h"
#include "kv_store/client/kv_store_client.h"
#include "kv_store/client/kv_wire.h"
#include "tests/test_util/model.h"
#include "tests/test_util/temp_path.h"
#include "tests/test_util/tls_pki.h"

namespace nanoserve {
namespace tls_test {

using ::nanoserve::testing::ExpectSameGreedy;
using ::nanoserve::testing::TestPki;

constexpr int64_t kPageSize = 8;

class TlsServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/nanoserve_tls_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    auto pki = TestPki::Create(dir_, {"kv-store", "prefill", "decode", "client"});
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = std::make_unique<TestPki>(*std::move(pki));
    const std::string model_dir = dir_ + "/model";
    ASSERT_TRUE(SaveCheckpoint(model_dir, testing::TinyCheckpoint()).ok());
    model_ = LoadModel(model_dir, ModelOptions()).value().model;

    ServiceStackOptions o;
    o.bin_dir = NANOSERVE_BIN_DIR;
    o.work_dir = dir_;
    o.model.spec = model_dir;
    o.kv_store.page_size = kPageSize;
    o.kv_store.pool_mb = 16;
    o.kv_store_flags = pki_->Flags("kv-store");
    o.prefill_flags = pki_->Flags("prefill");
    o.decode_flags = pki_->Flags("decode");
    o.credentials = pki_->Channel("client");
    auto stack = ServiceStack::Start(o);
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = *std::move(stack);
    decode_ = v1::Decode::NewStub(
        MakeChannel(stack_->target(ServiceStack::kDecode), 8 << 20, pki_->Channel("client")));
  }

  void TearDown() override {
    decode_.reset();
    if (stack_ != nullptr) EXPECT_TRUE(stack_->Stop().ok());
    if (std::getenv("NANOSERVE_KEEP_TEST_DIR") == nullptr) {
      std::system(absl::StrCat("rm -rf ", dir_).c_str());
    }
  }

  // A client of the store presenting `name`'s certificate.
  std::unique_ptr<KvStoreClient> Store(const std::string& name) {
    KvStoreClientOptions o;
    o.target = stack_->target(ServiceStack::kKvStore);
    o.credentials = pki_->Channel(name);
    return std::make_unique<KvStoreClient>(o);
  }

  static std::vector<int> Prompt(int length, int salt) {
    std::vector<int> p;
    for (int i = 0; i < length; ++i) p.push_back((i * 31 + salt * 97 + 3) % 512);
    return p;
  }

  std::vector<int> Offline(const std::vector<int>& prompt, int64_t max_new) {
    Generator generator(model_.get());
    const GenerateOptions options = testing::GreedyOptions(KvCacheMode::kOn, max_new);
    return generator.Generate({prompt}, options).value().sequences[0].output_ids;
  }

  // One page of zeros in the store's layout, for Put.
  static torch::Tensor OnePage(const PageLayout& layout) {
    return torch::zeros(layout.shape(1), torch::TensorOptions().dtype(layout.dtype));
  }

  std::string dir_;
  std::unique_ptr<TestPki> pki_;
  std::unique_ptr<Gpt2Model> model_;
  std::unique_ptr<ServiceStack> stack_;
  std::unique_ptr<v1::Decode::Stub> decode_;
};

// Decode -> prefill -> store, all over mutual TLS: the store is used
// (no fallback, whole pages fetched, a shared prefix hit) and the greedy
// tokens are the offline engine's, as without TLS.
TEST_F(TlsServicesTest, GenerateOverMutualTlsGetsTheGreedyTokens) {
  for (int length : {5, 17, 26}) {
    const std::vector<int> prompt = Prompt(length, length);
    auto out = StreamGenerate(*decode_, GreedyRequest(prompt, 10), absl::Seconds(60));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->finished.fallback_reason(), "");
    EXPECT_EQ(out->finished.usage().fetched_prompt_tokens(), length / kPageSize * kPageSize);
    ExpectSameGreedy(*model_, prompt, Offline(prompt, 10), out->output_ids);
  }
  std::vector<int> shared = Prompt(26, 26);
  shared.resize(20);
  shared.push_back(9);
  auto hit = StreamGenerate(*decode_, GreedyRequest(shared, 6), absl::Seconds(60));
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_EQ(hit->finished.usage().cached_prompt_tokens(), 16);
  ExpectSameGreedy(*model_, shared, Offline(shared, 6), hit->output_ids);
  auto stats = Store("client")->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->pages_pinned(), 0);
}

// No certificate of the CA, no service: plaintext callers and TLS callers
// without a client certificate are refused by every service.
TEST_F(TlsServicesTest, CallersWithoutACertificateAreRefused) {
  for (ServiceStack::Which which :
       {ServiceStack::kKvStore, ServiceStack::kPrefill, ServiceStack::kDecode}) {
    EXPECT_FALSE(WaitForServing(stack_->target(which), absl::Seconds(1)).ok()) << which;
  }
  auto plaintext = v1::Decode::NewStub(MakeChannel(stack_->target(ServiceStack::kDecode), 8 << 20));
  auto out = StreamGenerate(*plaintext, GreedyRequest(Prompt(5, 1), 4), absl::Seconds(5));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable) << out.status();

  grpc::SslCredentialsOptions server_only;  // verifies the server, shows no certificate
  std::ifstream in(pki_->ca());
  server_only.pem_root_certs.assign(std::istreambuf_iterator<char>(in), {});
  auto anonymous = v1::Decode::NewStub(MakeChannel(stack_->target(ServiceStack::kDecode), 8 << 20,
                                                   grpc::SslCredentials(server_only)));
  out = StreamGenerate(*anonymous, GreedyRequest(Prompt(5, 1), 4), absl::Seconds(5));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable) << out.status();

  KvStoreClientOptions o;
  o.target = stack_->target(ServiceStack::kKvStore);
  EXPECT_EQ(KvStoreClient(o).Stats().status().code(), absl::StatusCode::kUnavailable);
}

// Only prefill writes: Put from decode's or the client's identity gets
// PERMISSION_DENIED and stores nothing; prefill's Put goes in.
TEST_F(TlsServicesTest, OnlyPrefillMayPut) {
  const v1::StatsResponse before = Store("client")->Stats().value();
  const PageLayout layout = KvLayoutFromProto(before.layout()).value();
  const std::vector<int32_t> tokens(kPageSize, 7);
  for (const char* name : {"decode", "client"}) {
    auto put = Store(name)->Put(tokens, 0, 0, OnePage(layout), layout);
    EXPECT_EQ(put.status().code(), absl::StatusCode::kPermissionDenied) << name << put.status();
  }
  const v1::StatsResponse after = Store("client")->Stats().value();
  EXPECT_EQ(after.inserted_tokens(), before.inserted_tokens());
  EXPECT_EQ(after.pages_in_use(), before.pages_in_use());

  std::unique_ptr<KvStoreClient> prefill = Store("prefill");
  auto put = prefill->Put(tokens, 0, 0, OnePage(layout), layout);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->inserted_tokens(), kPageSize);
  EXPECT_TRUE(prefill->Release(put->lease_id()).ok());
}

// A lease is usable only by the identity that took it and the holder it
// was taken for: to anyone else it does not exist (NOT_FOUND, renewals
// report it unknown), and it stays pinned until its owner lets it go.
TEST_F(TlsServicesTest, ALeaseOfOneIdentityIsNotAnothers) {
  std::unique_ptr<KvStoreClient> prefill = Store("prefill");
  std::unique_ptr<KvStoreClient> decode = Store("decode");
  std::unique_ptr<KvStoreClient> client = Store("client");
  const PageLayout layout = KvLayoutFromProto(prefill->Stats()->layout()).value();
  const std::vector<int32_t> tokens(kPageSize, 11);
  auto put = prefill->Put(tokens, 0, 0, OnePage(layout), layout);
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_TRUE(prefill->Release(put->lease_id()).ok());

  // Taken by decode (Match is a read anyone may make); not the client's.
  auto taken = decode->MatchPrefix(tokens);
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->matched_tokens, kPageSize);
  for (KvStoreClient* other : {client.get(), prefill.get()}) {
    EXPECT_EQ(other->Release(taken->lease_id).code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(other->Fetch(taken->lease_id).status().code(), absl::StatusCode::kNotFound);
    auto unknown = other->Renew({taken->lease_id});
    ASSERT_TRUE(unknown.ok()) << unknown.status();
    EXPECT_EQ(*unknown, std::vector<uint64_t>{taken->lease_id});
  }
  EXPECT_EQ(client->Stats()->pages_pinned(), 1);
  EXPECT_TRUE(decode->Fetch(taken->lease_id).ok());
  EXPECT_TRUE(decode->Release(taken->lease_id).ok());

  // Taken by prefill for decode (a Put's lease_holder): both may use it,
  // the client may not.
  KvStoreClient::PutScope for_decode;
  for_decode.lease_holder = "decode";
  auto handed = prefill->Put(tokens, 0, 0, OnePage(layout), layout, for_decode);
  ASSERT_TRUE(handed.ok()) << handed.status();
  EXPECT_EQ(client->Release(handed->lease_id()).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(decode->Fetch(handed->lease_id()).ok());
  EXPECT_TRUE(decode->Release(handed->lease_id()).ok());
  EXPECT_EQ(client->Stats()->pages_pinned(), 0);
}

// Half-configured TLS stops a service (and the client) at start with a
// message naming what is missing.
TEST(TlsFlagsTest, HalfConfiguredTlsIsAStartupError) {
  const std::string log = ::nanoserve::testing::ProcessTempPath("tls_flags.log");
  const std::string bin = NANOSERVE_BIN_DIR;
  const std::vector<std::vector<std::string>> cases = {
      {bin + "/nanoserve-kv-store", "--tls_cert=/nonexistent/cert.pem"},
      {bin + "/nanoserve-prefill", "--tls_cert=a.pem", "--tls_key=a.key"},
      {bin + "/nanoserve-decode", "--tls_ca=ca.pem"},
      {bin + "/nanoserve", "health", "--target=127.0.0.1:1", "--tls_key=a.key"},
  };
  for (const std::vector<std::string>& argv : cases) {
    auto child = Subprocess::Start(argv, log);
    ASSERT_TRUE(child.ok()) << child.status();
    auto code = (*child)->Wait(absl::Seconds(60));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 2) << argv[0];
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("TLS is half configured"), std::string::npos) << text;
  }
}

}  // namespace tls_test
}  // namespace nanoserve
