// nanoserve.v1.Prefill on gRPC's callback API. The model work is blocking,
// so each call runs on a worker thread, not on gRPC's callback threads.
#ifndef NANOSERVE_PREFILL_SERVICE_PREFILL_SERVICE_H_
#define NANOSERVE_PREFILL_SERVICE_PREFILL_SERVICE_H_

#include "base/worker_pool.h"
#include "nanoserve/v1/prefill.grpc.pb.h"
#include "prefill_service/prefill_handler.h"

namespace nanoserve {

class PrefillService final : public v1::Prefill::CallbackService {
 public:
  // Neither is owned.
  PrefillService(PrefillHandler* handler, WorkerPool* workers)
      : handler_(handler), workers_(workers) {}

  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* context,
                                    const v1::PrefillRequest* request,
                                    v1::PrefillResponse* response) override;
  // The first tokens as soon as the stage has them, then the response.
  grpc::ServerWriteReactor<v1::PrefillEvent>* PrefillStream(
      grpc::CallbackServerContext* context, const v1::PrefillRequest* request) override;

 private:
  PrefillHandler* handler_;
  WorkerPool* workers_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_PREFILL_SERVICE_H_
