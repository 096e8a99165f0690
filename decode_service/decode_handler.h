// The decode stage's logic: one Generate call end to end, in proto terms.
//
//   1. validate and tokenize (INVALID_ARGUMENT before anything else runs);
//   2. Prefill: the prefill service computes the prompt (reusing the KV
//      store's cached prefix) and returns the first token and a lease on the
//      prompt's whole pages;
//   3. Fetch those pages from the store;
//   4. submit to the BatchScheduler, which loads them into a free slot,
//      computes the prompt's last partial page, and decodes with the batch;
//   5. stream each token (id and text piece), then a Finished message with
//      usage and timings; release the lease.
// If the prefill service or the store fails (unreachable, deadline, full),
// decode computes what is missing itself and says so in
// Finished.fallback_reason and the metrics; bad input is not retried.
// A cancelled call leaves the batch at the next step and frees its slot and
// lease. Leases held by running calls are renewed periodically.
//
// Thread safety: thread-safe. Blocking steps (2, 3) run on the worker pool.
#ifndef NANOSERVE_DECODE_SERVICE_DECODE_HANDLER_H_
#define NANOSERVE_DECODE_SERVICE_DECODE_HANDLER_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include <grpcpp/support/status.h>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "engine/batch_scheduler.h"
#include "engine/tokenizer.h"
#include "kv_store/client/kv_store_client.h"
#include "nanoserve/v1/decode.pb.h"
#include "nanoserve/v1/prefill.grpc.pb.h"
#include "rpc/metrics.h"
#include "rpc/worker_pool.h"

namespace nanoserve {

struct DecodeHandlerOptions {
  // Deadline of the Prefill call (the client's deadline, if sooner, wins).
  absl::Duration prefill_timeout = absl::Seconds(60);
  // How often leases of running calls are renewed at the store.
  absl::Duration lease_renew_period = absl::Seconds(10);
};

// Where one call's messages go: the gRPC reactor, or a test.
class GenerateSink {
 public:
  virtual ~GenerateSink() = default;
  // A Token message; called in order, never after Finish.
  virtual void Send(v1::GenerateResponse message) = 0;
  // The end: `last` (the Finished message) is sent only if status is OK.
  virtual void Finish(const grpc::Status& status, v1::GenerateResponse last) = 0;
};

class DecodeHandler {
 public:
  class Call;

  // `prefill` and `store` may be null (decode computes prompts itself).
  // Nothing is owned; all must outlive the handler.
  DecodeHandler(const Gpt2Tokenizer* tokenizer, BatchScheduler* scheduler,
                v1::Prefill::StubInterface* prefill, KvStoreClient* store, WorkerPool* workers,
                const DecodeHandlerOptions& options, MetricsRegistry* metrics);
  // Stops renewing leases. REQUIRES: every call has finished.
  ~DecodeHandler();

  // Starts a call; the sink gets its messages. The returned handle cancels it.
  std::shared_ptr<Call> Start(const v1::GenerateRequest& request, absl::Time deadline,
                              std::shared_ptr<GenerateSink> sink);
  // Ends the call (CANCELLED) wherever it is; idempotent.
  void Cancel(const std::shared_ptr<Call>& call);

 private:
  void Prepare(const std::shared_ptr<Call>& call);
  void OnToken(Call& call, int token);
  void OnDone(const std::shared_ptr<Call>& call, const absl::Status& status,
              const BatchResult& result);
  // Ends a call that never reached the scheduler.
  void EndEarly(const std::shared_ptr<Call>& call, const grpc::Status& status);
  void ReleaseLease(uint64_t lease_id);
  void RenewLeases();

  const Gpt2Tokenizer* tokenizer_;
  BatchScheduler* scheduler_;
  v1::Prefill::StubInterface* prefill_;
  KvStoreClient* store_;
  WorkerPool* workers_;
  const DecodeHandlerOptions options_;

  std::mutex leases_mu_;
  absl::flat_hash_set<uint64_t> leases_;  // held by running calls
  absl::Notification stop_;
  std::thread renewer_;

  struct Metrics {
    Counter* ok = nullptr;
    Counter* failed = nullptr;
    Counter* cancelled = nullptr;
    Counter* output_tokens = nullptr;
    Counter* prompt_tokens = nullptr;
    Counter* cached_tokens = nullptr;
    Counter* fetched_bytes = nullptr;
    Counter* fallbacks = nullptr;
    Histogram* ttft_ms = nullptr;
    Histogram* tpot_ms = nullptr;
    Histogram* fetch_ms = nullptr;
  } metrics_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_DECODE_SERVICE_DECODE_HANDLER_H_
