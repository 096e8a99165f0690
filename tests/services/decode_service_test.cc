// nanoserve.v1.Decode over a real gRPC server in this process: a client
// over TCP and one over a Unix socket are two callers, so the first at its
// share of admission is refused (RESOURCE_EXHAUSTED naming it, the bound and
// the flag) while the second is admitted; bytes that are not a
// GenerateRequest get INVALID_ARGUMENT with a message, not gRPC's own
// UNIMPLEMENTED with none, and are counted.
#include "decode_service/decode_service.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>

#include "nanoserve/v1/decode.grpc.pb.h"
#include "tests/test_util/raw_call.h"
#include "tests/test_util/shared_decode_stage.h"
#include "tests/test_util/temp_path.h"

namespace nanoserve {
namespace decode_service_test {

class DecodeServiceTest : public ::testing::Test {
 protected:
  // tests/test_util/shared_decode_stage.h: 300 tokens of work in all, 100
  // per caller; a call of 3 + 60 is 63.
  DecodeServiceTest() {
    handler_ = std::make_unique<DecodeHandler>(shared_.stage.get());
    service_ = std::make_unique<DecodeService>(handler_.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.AddListeningPort("unix:" + socket_, grpc::InsecureServerCredentials());
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
  }
  ~DecodeServiceTest() override {
    shared_.prefill.Open();
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
    unlink(socket_.c_str());
  }

  std::unique_ptr<v1::Decode::Stub> Stub(const std::string& target) {
    return v1::Decode::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  }
  std::string Tcp() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Unix() const { return "unix:" + socket_; }

  static v1::GenerateRequest Request(int64_t max_new) {
    v1::GenerateRequest r;
    for (int id : {1, 2, 3}) r.add_prompt_ids(id);
    r.set_max_new_tokens(max_new);
    r.set_ignore_eos(true);
    r.mutable_sampling()->set_temperature(0);
    return r;
  }
  // A whole Generate call: its status once the stream ends.
  static grpc::Status Generate(v1::Decode::Stub& stub, const v1::GenerateRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub.Generate(&context, request);
    v1::GenerateResponse message;
    while (reader->Read(&message)) {
    }
    return reader->Finish();
  }

  double Metric(const std::string& name) { return shared_.Metric(name); }

  testing::SharedDecodeStage shared_;
  std::unique_ptr<DecodeHandler> handler_;
  std::unique_ptr<DecodeService> service_;
  const std::string socket_ = testing::ProcessTempPath("decode.sock");
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(DecodeServiceTest, ACallerAtItsShareIsRefusedWhileAnotherIsAdmitted) {
  ASSERT_NE(server_, nullptr);
  ASSERT_NE(port_, 0);
  auto tcp = Stub(Tcp());
  auto unix_socket = Stub(Unix());
  grpc::Status first, second;
  std::thread held([&] { first = Generate(*tcp, Request(60)); });
  ASSERT_TRUE(shared_.prefill.AwaitEntered(1));
  const grpc::Status refused = Generate(*tcp, Request(60));  // 63 + 63 > 100
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (const std::string& part :
       {"caller 'ipv4:127.0.0.1'", "100", "--max_tokens_in_flight_per_caller"}) {
    EXPECT_NE(refused.error_message().find(part), std::string::npos)
        << part << ": " << refused.error_message();
  }
  std::thread other([&] { second = Generate(*unix_socket, Request(60)); });
  EXPECT_TRUE(shared_.prefill.AwaitEntered(2)) << "the second caller was not admitted";
  EXPECT_EQ(Metric("nanoserve_decode_callers_in_flight"), 2);
  EXPECT_EQ(Metric("nanoserve_decode_caller_share_refusals_total"), 1);
  shared_.prefill.Open();
  held.join();
  other.join();
  EXPECT_TRUE(first.ok()) << first.error_message();
  EXPECT_TRUE(second.ok()) << second.error_message();
  EXPECT_TRUE(Generate(*tcp, Request(60)).ok());  // the share came back
  EXPECT_EQ(Metric("nanoserve_decode_tokens_in_flight"), 0);
}

// The issue: an unparseable protobuf got UNIMPLEMENTED with an empty
// message, as the typed callback method fails before any code runs.
TEST_F(DecodeServiceTest, AnUnparseableRequestIsInvalidArgumentWithAMessage) {
  ASSERT_NE(server_, nullptr);
  shared_.prefill.Open();
  // Field 1, length-delimited, claiming 127 bytes of which 3 follow.
  const std::string garbage = std::string("\x0a\x7f") + "abc";
  const grpc::Status status =
      testing::RawUnaryCall(grpc::CreateChannel(Tcp(), grpc::InsecureChannelCredentials()),
                            "/nanoserve.v1.Decode/Generate", garbage);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("not a nanoserve.v1.GenerateRequest"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(Metric("nanoserve_decode_requests_total{code=\"INVALID_ARGUMENT\"}"), 1);
  EXPECT_EQ(Metric("nanoserve_decode_tokens_in_flight"), 0);
  auto stub = Stub(Tcp());  // a good request after it is served
  EXPECT_TRUE(Generate(*stub, Request(4)).ok());
}

}  // namespace decode_service_test
}  // namespace nanoserve
