#include "decode_service/decode_service.h"

#include <deque>
#include <memory>
#include <mutex>

#include "absl/time/clock.h"

namespace nanoserve {
namespace {

class GenerateReactor;

// The sink the handler writes into. It outlives the reactor if need be:
// once the reactor is done, messages are dropped.
class ReactorSink final : public GenerateSink {
 public:
  void Send(v1::GenerateResponse message) override;
  void Finish(const grpc::Status& status, v1::GenerateResponse last) override;

  // Reactor side; each takes mu_.
  void Attach(GenerateReactor* reactor);
  void OnWriteDone(bool ok);
  void Detach();

 private:
  void WriteFrontLocked();  // REQUIRES: mu_ held, queue_ not empty

  std::mutex mu_;
  GenerateReactor* reactor_ = nullptr;
  std::deque<v1::GenerateResponse> queue_;  // front() is being written
  bool writing_ = false;
  bool finish_pending_ = false;
  bool finished_ = false;
  grpc::Status status_;
};

class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(DecodeHandler* handler, grpc::CallbackServerContext* context,
                  const v1::GenerateRequest& request)
      : handler_(handler), sink_(std::make_shared<ReactorSink>()) {
    sink_->Attach(this);
    call_ = handler_->Start(request, absl::FromChrono(context->deadline()), sink_);
  }
  void OnWriteDone(bool ok) override { sink_->OnWriteDone(ok); }
  void OnCancel() override { handler_->Cancel(call_); }
  void OnDone() override {
    sink_->Detach();
    handler_->Cancel(call_);  // no-op if it finished
    delete this;
  }

 private:
  DecodeHandler* handler_;
  std::shared_ptr<ReactorSink> sink_;
  std::shared_ptr<DecodeHandler::Call> call_;
};

void ReactorSink::Attach(GenerateReactor* reactor) {
  std::lock_guard<std::mutex> lock(mu_);
  reactor_ = reactor;
}

void ReactorSink::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  reactor_ = nullptr;
}

void ReactorSink::WriteFrontLocked() {
  writing_ = true;
  reactor_->StartWrite(&queue_.front());
}

void ReactorSink::Send(v1::GenerateResponse message) {
  std::lock_guard<std::mutex> lock(mu_);
  if (reactor_ == nullptr || finish_pending_ || finished_) return;
  queue_.push_back(std::move(message));
  if (!writing_) WriteFrontLocked();
}

void ReactorSink::Finish(const grpc::Status& status, v1::GenerateResponse last) {
  std::lock_guard<std::mutex> lock(mu_);
  if (reactor_ == nullptr || finish_pending_ || finished_) return;
  if (status.ok()) queue_.push_back(std::move(last));
  status_ = status;
  finish_pending_ = true;
  if (!writing_) {
    if (!queue_.empty()) {
      WriteFrontLocked();
    } else {
      finished_ = true;
      reactor_->Finish(status_);
    }
  }
}

void ReactorSink::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  writing_ = false;
  if (!queue_.empty()) queue_.pop_front();
  if (reactor_ == nullptr || finished_) return;
  if (!ok) {  // the stream is broken: the client went away
    queue_.clear();
    finished_ = true;
    reactor_->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
    return;
  }
  if (!queue_.empty()) {
    WriteFrontLocked();
  } else if (finish_pending_) {
    finished_ = true;
    reactor_->Finish(status_);
  }
}

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* DecodeService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return new GenerateReactor(handler_, context, *request);
}

}  // namespace nanoserve
