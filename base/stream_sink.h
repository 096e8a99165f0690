// The writes of one server-streaming call on gRPC's callback API, from any
// thread: queued in order with one in flight at a time (as the API asks),
// then the status. It is shared between the call's reactor and whoever
// produces the messages, and outlives the reactor if need be: once the
// reactor is done (Detach), messages are dropped.
//
// Thread safety: thread-safe.
#ifndef NANOSERVE_BASE_STREAM_SINK_H_
#define NANOSERVE_BASE_STREAM_SINK_H_

#include <deque>
#include <mutex>
#include <optional>
#include <utility>

#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

namespace nanoserve {

template <typename Message>
class StreamSink {
 public:
  using Reactor = grpc::ServerWriteReactor<Message>;

  // Producer side. A message sent after Finish, or once the stream broke or
  // the reactor is gone, is dropped; Send reports whether it was queued.
  bool Send(Message message) {
    std::lock_guard<std::mutex> lock(mu_);
    if (reactor_ == nullptr || finish_pending_ || finished_) return false;
    queue_.push_back(std::move(message));
    if (!writing_) WriteFrontLocked();
    return true;
  }
  // Writes `last` (if any) after what is queued, then finishes the call
  // with `status`; the first call only.
  void Finish(const grpc::Status& status, std::optional<Message> last) {
    std::lock_guard<std::mutex> lock(mu_);
    if (reactor_ == nullptr || finish_pending_ || finished_) return;
    if (last.has_value()) queue_.push_back(*std::move(last));
    status_ = status;
    finish_pending_ = true;
    if (writing_) return;
    if (!queue_.empty()) {
      WriteFrontLocked();
    } else {
      finished_ = true;
      reactor_->Finish(status_);
    }
  }

  // Reactor side.
  void Attach(Reactor* reactor) {
    std::lock_guard<std::mutex> lock(mu_);
    reactor_ = reactor;
  }
  // From the reactor's OnDone: it is about to go.
  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    reactor_ = nullptr;
  }
  // From the reactor's OnCancel.
  void OnCancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
  }
  // Whether the client went away (cancelled, the stream broke, or the call
  // is over): nothing more will reach it.
  bool cancelled() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_ || reactor_ == nullptr;
  }
  // From the reactor's OnWriteDone.
  void OnWriteDone(bool ok) {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!queue_.empty()) queue_.pop_front();
    if (reactor_ == nullptr || finished_) return;
    if (!ok) {  // the stream is broken: the client went away
      queue_.clear();
      cancelled_ = true;
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

 private:
  // REQUIRES: mu_ held, queue_ not empty, reactor_ set.
  void WriteFrontLocked() {
    writing_ = true;
    reactor_->StartWrite(&queue_.front());
  }

  std::mutex mu_;
  Reactor* reactor_ = nullptr;
  std::deque<Message> queue_;  // front() is being written
  bool writing_ = false;
  bool finish_pending_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  grpc::Status status_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_STREAM_SINK_H_
