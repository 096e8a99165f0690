#include "decode_service/decode_handler.h"

#include <utility>

#include <grpcpp/support/proto_buffer_reader.h>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "rpc/sampling_proto.h"

namespace nanoserve {
namespace {

GenerateParams ParamsFromProto(const v1::GenerateRequest& request, const PeerIdentity& caller) {
  GenerateParams params;
  params.caller = CallerKeyOf(caller);
  params.prompt = request.prompt();
  params.prompt_ids.assign(request.prompt_ids().begin(), request.prompt_ids().end());
  params.max_new_tokens = request.max_new_tokens();
  params.sampling = SamplingFromProto(request.sampling());
  params.stop_at_end_of_text = !request.ignore_eos();
  params.cache_salt = request.cache_salt();
  params.stop.assign(request.stop().begin(), request.stop().end());
  return params;
}

v1::GenerateResponse FinishedToProto(const GenerateSummary& s) {
  v1::GenerateResponse message;
  v1::Finished* f = message.mutable_finished();
  f->set_finish_reason(s.finish_reason);
  f->set_fallback_reason(s.fallback_reason);
  f->set_trailing_text(s.trailing_text);
  v1::Usage* usage = f->mutable_usage();
  usage->set_prompt_tokens(s.prompt_tokens);
  usage->set_cached_prompt_tokens(s.cached_prompt_tokens);
  usage->set_fetched_prompt_tokens(s.fetched_prompt_tokens);
  usage->set_recomputed_prompt_tokens(s.recomputed_prompt_tokens);
  usage->set_output_tokens(s.output_tokens);
  v1::Timings* t = f->mutable_timings();
  t->set_queue_ms(s.queue_ms);
  t->set_prefill_ms(s.prefill_ms);
  t->set_prefill_server_ms(s.prefill_server_ms);
  t->set_prefill_store_ms(s.prefill_store_ms);
  t->set_prefill_compute_ms(s.prefill_compute_ms);
  t->set_fetch_ms(s.fetch_ms);
  t->set_ttft_ms(s.ttft_ms);
  t->set_ms_per_output_token(s.ms_per_output_token);
  t->set_total_ms(s.total_ms);
  t->set_kv_bytes_fetched(s.kv_bytes_fetched);
  t->set_prefill_first_token_ms(s.prefill_first_token_ms);
  t->set_kv_fetch_skipped(s.kv_fetch_skipped);
  t->set_submitted_ms(s.submitted_ms);
  t->set_second_token_ms(s.second_token_ms);
  return message;
}

// A call's events as GenerateResponse messages.
class SinkEvents final : public GenerateEvents {
 public:
  explicit SinkEvents(std::shared_ptr<GenerateSink> sink) : sink_(std::move(sink)) {}

  void OnToken(const StreamedToken& token) override {
    v1::GenerateResponse message;
    v1::Token* t = message.mutable_token();
    t->set_id(token.id);
    t->set_text(token.text);
    t->set_index(token.index);
    sink_->Send(std::move(message));
  }
  void OnFinish(const absl::Status& status, const GenerateSummary& summary) override {
    sink_->Finish(ToGrpcStatus(status),
                  status.ok() ? FinishedToProto(summary) : v1::GenerateResponse());
  }

 private:
  std::shared_ptr<GenerateSink> sink_;
};

}  // namespace

std::shared_ptr<DecodeHandler::Call> DecodeHandler::Start(const v1::GenerateRequest& request,
                                                          const PeerIdentity& caller,
                                                          absl::Time deadline,
                                                          std::shared_ptr<GenerateSink> sink) {
  return stage_->Start(ParamsFromProto(request, caller), deadline,
                       std::make_shared<SinkEvents>(std::move(sink)));
}

std::shared_ptr<DecodeHandler::Call> DecodeHandler::Start(const grpc::ByteBuffer& request,
                                                          const PeerIdentity& caller,
                                                          absl::Time deadline,
                                                          std::shared_ptr<GenerateSink> sink) {
  grpc::ByteBuffer bytes(request);  // shares the slices; the reader consumes it
  grpc::ProtoBufferReader reader(&bytes);
  v1::GenerateRequest parsed;
  if (!reader.status().ok() || !parsed.ParseFromZeroCopyStream(&reader)) {
    return stage_->Refuse(
        absl::InvalidArgumentError(absl::StrCat(
            "the request (", request.Length(),
            " bytes) is not a nanoserve.v1.GenerateRequest: its protobuf encoding does not parse")),
        std::make_shared<SinkEvents>(std::move(sink)));
  }
  return Start(parsed, caller, deadline, std::move(sink));
}

}  // namespace nanoserve
