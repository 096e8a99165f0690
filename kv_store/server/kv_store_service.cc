#include "kv_store/server/kv_store_service.h"

#include <memory>

namespace nanoserve {
namespace {

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// Reads the Put stream into a session; finishes on the first error.
class PutReactor final : public grpc::ServerReadReactor<v1::PutRequest> {
 public:
  PutReactor(grpc::CallbackServerContext* context, KvStoreHandler* handler,
             const PeerIdentity& caller, v1::PutResponse* response)
      : session_(handler->StartPut(caller)), response_(response) {
    // An idle stream is cancelled (the context lives until OnDone, which
    // destroys the session after the handler forgot it).
    session_->SetCancel([context] { context->TryCancel(); });
    StartRead(&message_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {  // the client finished writing (or went away)
      Finish(session_->Finish(response_));
      return;
    }
    grpc::Status status = session_->OnMessage(message_);
    if (!status.ok()) {
      Finish(status);
      return;
    }
    StartRead(&message_);
  }
  void OnDone() override { delete this; }

 private:
  std::unique_ptr<KvStoreHandler::PutSession> session_;
  v1::PutResponse* response_;
  v1::PutRequest message_;
};

// Writes the Fetch session's messages, one in flight at a time.
class FetchReactor final : public grpc::ServerWriteReactor<v1::FetchResponse> {
 public:
  FetchReactor(KvStoreHandler* handler, const PeerIdentity& caller,
               const v1::FetchRequest& request) {
    grpc::Status status = handler->StartFetch(request, caller, &session_);
    if (!status.ok()) {
      Finish(status);
      return;
    }
    WriteNext();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "Fetch: write failed"));
      return;
    }
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    if (session_->Next(&message_)) {
      StartWrite(&message_);
    } else {
      Finish(session_->Done());
    }
  }
  std::unique_ptr<KvStoreHandler::FetchSession> session_;
  v1::FetchResponse message_;
};

}  // namespace

grpc::ServerUnaryReactor* KvStoreService::Match(grpc::CallbackServerContext* context,
                                                const v1::MatchRequest* request,
                                                v1::MatchResponse* response) {
  return Done(context, handler_->Match(*request, PeerIdentityOf(*context), response));
}

grpc::ServerUnaryReactor* KvStoreService::MatchBatch(grpc::CallbackServerContext* context,
                                                     const v1::MatchBatchRequest* request,
                                                     v1::MatchBatchResponse* response) {
  return Done(context, handler_->MatchBatch(*request, PeerIdentityOf(*context), response));
}

grpc::ServerReadReactor<v1::PutRequest>* KvStoreService::Put(grpc::CallbackServerContext* context,
                                                             v1::PutResponse* response) {
  return new PutReactor(context, handler_, PeerIdentityOf(*context), response);
}

grpc::ServerWriteReactor<v1::FetchResponse>* KvStoreService::Fetch(
    grpc::CallbackServerContext* context, const v1::FetchRequest* request) {
  return new FetchReactor(handler_, PeerIdentityOf(*context), *request);
}

grpc::ServerUnaryReactor* KvStoreService::Release(grpc::CallbackServerContext* context,
                                                  const v1::ReleaseRequest* request,
                                                  v1::ReleaseResponse* response) {
  return Done(context, handler_->Release(*request, PeerIdentityOf(*context), response));
}

grpc::ServerUnaryReactor* KvStoreService::RenewLease(grpc::CallbackServerContext* context,
                                                     const v1::RenewLeaseRequest* request,
                                                     v1::RenewLeaseResponse* response) {
  return Done(context, handler_->RenewLease(*request, PeerIdentityOf(*context), response));
}

grpc::ServerUnaryReactor* KvStoreService::Stats(grpc::CallbackServerContext* context,
                                                const v1::StatsRequest* request,
                                                v1::StatsResponse* response) {
  return Done(context, handler_->Stats(*request, response));
}

grpc::ServerUnaryReactor* KvStoreService::Connect(grpc::CallbackServerContext* context,
                                                  const v1::ConnectRequest* request,
                                                  v1::ConnectResponse* response) {
  return Done(context, handler_->Connect(*request, PeerIdentityOf(*context), response));
}

grpc::ServerUnaryReactor* KvStoreService::Reserve(grpc::CallbackServerContext* context,
                                                  const v1::ReserveRequest* request,
                                                  v1::ReserveResponse* response) {
  return Done(context, handler_->Reserve(*request, PeerIdentityOf(*context), response));
}

grpc::ServerUnaryReactor* KvStoreService::Commit(grpc::CallbackServerContext* context,
                                                 const v1::CommitRequest* request,
                                                 v1::CommitResponse* response) {
  return Done(context, handler_->Commit(*request, PeerIdentityOf(*context), response));
}

}  // namespace nanoserve
