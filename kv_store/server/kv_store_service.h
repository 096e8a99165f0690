// nanoserve.v1.KvStore on gRPC's callback API: unary calls on the default
// reactor, Put as a read reactor, Fetch as a write reactor. All logic is in
// KvStoreHandler.
#ifndef NANOSERVE_KV_STORE_SERVER_KV_STORE_SERVICE_H_
#define NANOSERVE_KV_STORE_SERVER_KV_STORE_SERVICE_H_

#include "kv_store/server/kv_store_handler.h"
#include "nanoserve/v1/kv_store.grpc.pb.h"

namespace nanoserve {

class KvStoreService final : public v1::KvStore::CallbackService {
 public:
  explicit KvStoreService(KvStoreHandler* handler) : handler_(handler) {}

  grpc::ServerUnaryReactor* Match(grpc::CallbackServerContext* context,
                                  const v1::MatchRequest* request,
                                  v1::MatchResponse* response) override;
  grpc::ServerReadReactor<v1::PutRequest>* Put(grpc::CallbackServerContext* context,
                                               v1::PutResponse* response) override;
  grpc::ServerWriteReactor<v1::FetchResponse>* Fetch(grpc::CallbackServerContext* context,
                                                     const v1::FetchRequest* request) override;
  grpc::ServerUnaryReactor* MatchBatch(grpc::CallbackServerContext* context,
                                       const v1::MatchBatchRequest* request,
                                       v1::MatchBatchResponse* response) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* context,
                                    const v1::ReleaseRequest* request,
                                    v1::ReleaseResponse* response) override;
  grpc::ServerUnaryReactor* RenewLease(grpc::CallbackServerContext* context,
                                       const v1::RenewLeaseRequest* request,
                                       v1::RenewLeaseResponse* response) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const v1::StatsRequest* request,
                                  v1::StatsResponse* response) override;
  grpc::ServerUnaryReactor* Connect(grpc::CallbackServerContext* context,
                                    const v1::ConnectRequest* request,
                                    v1::ConnectResponse* response) override;
  grpc::ServerUnaryReactor* Reserve(grpc::CallbackServerContext* context,
                                    const v1::ReserveRequest* request,
                                    v1::ReserveResponse* response) override;
  grpc::ServerUnaryReactor* Commit(grpc::CallbackServerContext* context,
                                   const v1::CommitRequest* request,
                                   v1::CommitResponse* response) override;

 private:
  KvStoreHandler* handler_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_SERVER_KV_STORE_SERVICE_H_
