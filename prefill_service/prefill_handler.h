// The prefill stage's logic in proto terms. For a prompt it
//  1. matches the longest cached prefix in the KV store (all but the last
//     token, so that one always runs and gives the first token's logits),
//  2. fetches that prefix's K/V and computes only the rest of the prompt,
//  3. puts the prompt's new whole pages into the store,
//  4. returns the first token and a lease on the stored pages.
// When the store is unreachable or refuses (full, layout mismatch, ...),
// the prompt is computed here in full, nothing is stored, and the response
// says so (store_used = false, store_error) — the request still succeeds.
//
// Thread safety: thread-safe; prompts are computed one at a time (one
// single-row KvCache, one model).
#ifndef NANOSERVE_PREFILL_SERVICE_PREFILL_HANDLER_H_
#define NANOSERVE_PREFILL_SERVICE_PREFILL_HANDLER_H_

#include <cstdint>
#include <mutex>

#include <grpcpp/support/status.h>

#include "absl/time/time.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "kv_store/client/kv_store_client.h"
#include "nanoserve/v1/prefill.pb.h"
#include "rpc/metrics.h"

namespace nanoserve {

struct PrefillHandlerOptions {
  // Prompt tokens per forward pass; 0 = all at once.
  int64_t prefill_chunk = 0;
};

class PrefillHandler {
 public:
  // `store` may be null (no store: every prompt is computed in full).
  // Nothing is owned.
  PrefillHandler(const Gpt2Model* model, KvStoreClient* store,
                 const PrefillHandlerOptions& options, MetricsRegistry* metrics);

  // INVALID_ARGUMENT for an empty prompt, an unknown token id, a prompt
  // longer than the context, bad sampling; DEADLINE_EXCEEDED if `deadline`
  // passes before the prompt's turn; INTERNAL on a LibTorch error.
  grpc::Status Prefill(const v1::PrefillRequest& request, absl::Time deadline,
                       v1::PrefillResponse* response);

  // Releases the lease of a response its caller will not read (the call was
  // cancelled), so its pages do not stay pinned until the lease expires.
  void Abandon(const v1::PrefillResponse& response);

 private:
  grpc::Status Validate(const v1::PrefillRequest& request) const;
  // Steps 1-3 with the store; leaves row 0 of cache_ holding the prompt.
  void Run(const std::vector<int>& prompt, Sampler& sampler, v1::PrefillResponse* response);

  const Gpt2Model* model_;
  KvStoreClient* store_;
  const PrefillHandlerOptions options_;
  v1::KvLayout layout_;  // ours; page_size comes from the store

  std::mutex mu_;   // one prompt at a time
  KvCache cache_;   // one row of n_positions

  Counter* requests_ok_ = nullptr;
  Counter* requests_failed_ = nullptr;
  Counter* cached_tokens_ = nullptr;
  Counter* computed_tokens_ = nullptr;
  Counter* store_fallbacks_ = nullptr;
  Histogram* latency_ms_ = nullptr;
};

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_PREFILL_HANDLER_H_
