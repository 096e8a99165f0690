// The decode stage as a library (no gRPC): one generation end to end.
//
//   1. validate and tokenize (INVALID_ARGUMENT before anything else runs);
//   2. prefill: a Prefiller (the prefill service, or a PrefillStage in this
//      process) computes the prompt, reusing the KV store's cached prefix,
//      and returns the first token and a lease on the prompt's whole pages;
//   3. read those pages: when prefill returned their page ids and the
//      store's pool is mapped here (PrefixStore::PoolOf), no call to the
//      store: the scheduler copies them at admission out of the mapping
//      straight into the slot's pages; else fetched (PrefixStore::
//      ReadLeased, the reference path, also taken when the ids are refused:
//      another epoch, no mapping);
//   4. submit to the BatchScheduler, which loads them into a free slot,
//      computes the prompt's last partial page, and decodes with the batch;
//   5. each token to the caller's GenerateEvents as it is made, then the
//      summary (usage, timings); the lease is released. With stop strings,
//      text that may begin one is held back until it cannot, and the call
//      ends (finish reason "stop") where one occurs.
// If prefill or the store fails (unreachable, deadline, full), the stage
// computes what is missing itself and says so in the summary's
// fallback_reason and the metrics; bad input is not retried. A cancelled
// call leaves the batch at the next step and frees its slot and lease.
// Leases held by running calls are renewed periodically.
//
// Thread safety: thread-safe. Blocking steps (2, 3) run on the worker pool.
#ifndef NANOSERVE_DECODE_SERVICE_DECODE_STAGE_H_
#define NANOSERVE_DECODE_SERVICE_DECODE_STAGE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "base/caller_shares.h"
#include "base/metrics.h"
#include "base/worker_pool.h"
#include "engine/batch_scheduler.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "kv_cache/prefix_store.h"
#include "prefill_service/prefill_stage.h"

namespace nanoserve {

struct DecodeStageOptions {
  // How often leases of running calls are renewed at the store.
  absl::Duration lease_renew_period = absl::Seconds(10);
  // Tokens of work admitted at once, over every call in flight: each counts
  // its prompt (ids, or bytes of text: an upper bound) and max_new_tokens,
  // each at most the context. Beyond it a call is refused at once with
  // RESOURCE_EXHAUSTED, so that a few huge requests cannot fill admission.
  // 0: 4 x max_batch x the context (four full batches' worth).
  int64_t max_tokens_in_flight = 0;
  // Of those, what one caller (GenerateParams::caller) may hold at once,
  // so that one client cannot take all of it from the others: beyond it
  // that caller's call is refused with RESOURCE_EXHAUSTED naming the
  // caller, the bound and --max_tokens_in_flight_per_caller, while other
  // callers are still admitted. A caller with nothing in flight is admitted
  // for one call of any size (base/caller_shares.h). 0: half of
  // max_tokens_in_flight.
  int64_t max_tokens_in_flight_per_caller = 0;
};

// Stop strings a call may have, and the longest one, in bytes.
inline constexpr int kMaxStopStrings = 4;
inline constexpr int kMaxStopBytes = 256;

struct GenerateParams {
  std::string prompt;           // text; used when prompt_ids is empty
  std::vector<int> prompt_ids;  // wins when not empty
  int64_t max_new_tokens = 16;  // >= 1
  SamplingOptions sampling;
  bool stop_at_end_of_text = true;
  // The cache namespace (kv_store/prefix_cache.h): the prompt's prefix is
  // reused only from prompts of the same salt. At most kMaxCacheSaltBytes.
  std::string cache_salt;
  // The output ends before the first occurrence of any of these in its text
  // (not included). At most kMaxStopStrings, each 1 to kMaxStopBytes bytes.
  std::vector<std::string> stop;
  // Who asked, for the share of admission it may hold: a gRPC call's
  // CallerKeyOf (base/tls.h: its certificate name, else its address without
  // the port), an HTTP request's client address. "" is one anonymous caller.
  std::string caller;
};

struct StreamedToken {
  int id = 0;
  // The UTF-8 text this token completes (may be empty); with stop strings,
  // the text now known to come before any of them.
  std::string text;
  int64_t index = 0;  // 0 for the first output token
};

struct GenerateSummary {
  std::string finish_reason;    // "stop" (end of text or a stop string) or "length"
  std::string fallback_reason;  // empty when prefill and the store served the prompt
  // Text not yet sent with a token: bytes that never formed a character
  // (U+FFFD each), and text held back for a stop string that did not come.
  std::string trailing_text;
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;      // reused from the store by prefill
  int64_t fetched_prompt_tokens = 0;     // read from the store by decode
  int64_t recomputed_prompt_tokens = 0;  // computed by decode itself
  int64_t output_tokens = 0;
  double queue_ms = 0;
  double prefill_ms = 0;
  double prefill_server_ms = 0;  // prefill's own account of the call
  double prefill_store_ms = 0;
  double prefill_compute_ms = 0;
  // From the Prefill call's start to prefill's first-token message (0 if
  // none came before the call returned).
  double prefill_first_token_ms = 0;
  double fetch_ms = 0;  // the store's pages into the slot: the read and the copy
  double ttft_ms = 0;
  // From arrival to the request's hand-over to the scheduler (after the
  // Prefill call and the pages' read), and to its second token (0 for one
  // token): with the first token from prefill, the second waits for both
  // and for the scheduler's next turn.
  double submitted_ms = 0;
  double second_token_ms = 0;
  double ms_per_output_token = 0;
  double total_ms = 0;
  int64_t kv_bytes_fetched = 0;
  // The pages were copied by the ids prefill returned: no Fetch.
  bool kv_fetch_skipped = false;
};

// Where one call's results go.
class GenerateEvents {
 public:
  virtual ~GenerateEvents() = default;
  // A token; called in order, never after OnFinish.
  virtual void OnToken(const StreamedToken& token) = 0;
  // The end, once: the summary is meaningful only if status is OK.
  virtual void OnFinish(const absl::Status& status, const GenerateSummary& summary) = 0;
};

// Decode's liveness: OK unless the scheduler loop has been on one turn for
// `max_stall` or more (then UNAVAILABLE saying how long): a loop that stopped
// stepping, which only a restart ends.
absl::Status SchedulerLiveness(const BatchScheduler& scheduler, absl::Duration max_stall,
                               absl::Time now = absl::Now());

class DecodeStage {
 public:
  class Call;

  // `prefill` and `store` may be null (the stage computes prompts itself);
  // `metrics` may be null. Nothing is owned; all must outlive the stage.
  DecodeStage(const Gpt2Tokenizer* tokenizer, BatchScheduler* scheduler, Prefiller* prefill,
              PrefixStore* store, WorkerPool* workers, const DecodeStageOptions& options,
              MetricsRegistry* metrics);
  // Stops renewing leases. REQUIRES: every call has finished.
  ~DecodeStage();

  // Starts a call; `events` gets its results. The handle cancels it. A call
  // beyond the scheduler's slots and queue (max_batch + max_queue calls in
  // flight, counting those still in prefill), or whose tokens of work would
  // pass max_tokens_in_flight, or its caller's share of them
  // (max_tokens_in_flight_per_caller), ends at once with RESOURCE_EXHAUSTED,
  // before any work. What admission counted comes back when the call ends,
  // however it ends.
  std::shared_ptr<Call> Start(GenerateParams params, absl::Time deadline,
                              std::shared_ptr<GenerateEvents> events);
  // A call that cannot start (its request did not parse): ends at once with
  // `status`, counted among the calls' outcomes; takes nothing. The handle
  // is of a call that has ended. REQUIRES: !status.ok().
  std::shared_ptr<Call> Refuse(const absl::Status& status, std::shared_ptr<GenerateEvents> events);
  // Ends the call (CANCELLED) wherever it is; idempotent.
  void Cancel(const std::shared_ptr<Call>& call);
  // A shutdown's grace runs out: every call in flight ends with `status`
  // (e.g. UNAVAILABLE, "retry elsewhere") at the scheduler's next step, its
  // tokens so far sent; calls started from now on end with it at once.
  // REQUIRES: !status.ok().
  void EndAll(const absl::Status& status);

 private:
  // How a cancelled call ends: CANCELLED, or EndAll's status.
  static absl::Status CancelledStatus(Call& call);
  // The call ended: EndAll no longer sees it.
  void Forget(Call& call);
  // Counts the call's tokens of work against the total and its caller's
  // share, or says why not; `calls_before`: calls in flight before it.
  absl::Status Admit(Call& call, int64_t calls_before);
  // Gives back what Start and Admit counted; once per call, when it ends.
  void EndAdmission(Call& call);
  // Steps 1-4 on a worker; `tokenized`: step 1's batch where Start did it
  // (and started the Prefill call), else null.
  void Prepare(const std::shared_ptr<Call>& call, BatchRequest* tokenized);
  // Step 1: validates and tokenizes into `batch`; false if the call ended.
  bool Tokenize(const std::shared_ptr<Call>& call, BatchRequest& batch);
  // Starts step 2, the Prefill call (Prefiller::Start), when there is a
  // prefill service.
  void StartPrefill(const std::shared_ptr<Call>& call, const BatchRequest& batch);
  // Step 2: waits for the Prefill call; false if the call ended.
  bool RunPrefill(const std::shared_ptr<Call>& call, BatchRequest& batch);
  // Step 3.
  void ReadPages(Call& call, BatchRequest& batch);
  void Submit(const std::shared_ptr<Call>& call, BatchRequest batch);
  void OnToken(Call& call, int token);
  void OnDone(const std::shared_ptr<Call>& call, const absl::Status& status,
              const BatchResult& result);
  // Ends a call at its stop string (scheduler thread).
  void StopAtString(Call& call);
  // Ends a call that never reached the scheduler.
  void EndEarly(const std::shared_ptr<Call>& call, const absl::Status& status);
  void ReleaseLease(uint64_t lease_id);
  void RenewLeases();

  const Gpt2Tokenizer* tokenizer_;
  BatchScheduler* scheduler_;
  Prefiller* prefill_;
  PrefixStore* store_;
  WorkerPool* workers_;
  const DecodeStageOptions options_;

  std::atomic<int64_t> calls_in_flight_{0};
  // Prefill calls Start began that no worker has waited for yet: at most
  // the workers' count, as many as the workers could have had in flight.
  std::atomic<int> early_prefills_{0};
  std::mutex live_mu_;
  absl::flat_hash_map<Call*, std::weak_ptr<Call>> live_;  // guarded by live_mu_
  absl::Status ending_;                                   // guarded by live_mu_; EndAll's
  const int64_t max_tokens_in_flight_;
  std::atomic<int64_t> tokens_in_flight_{0};  // the calls' work, as Admit counted it
  CallerShares shares_;                       // the same work, per caller
  std::mutex leases_mu_;
  absl::flat_hash_set<uint64_t> leases_;  // held by running calls
  absl::Notification stop_;
  std::thread renewer_;

  OutcomeCounter calls_;
  struct Metrics {
    Counter* output_tokens = nullptr;
    Counter* prompt_tokens = nullptr;
    Counter* cached_tokens = nullptr;
    Counter* fetched_bytes = nullptr;
    Counter* fallbacks = nullptr;
    Counter* fetches_skipped = nullptr;
    Histogram* ttft_ms = nullptr;
    Histogram* tpot_ms = nullptr;
    Histogram* fetch_ms = nullptr;
  } metrics_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_DECODE_SERVICE_DECODE_STAGE_H_
