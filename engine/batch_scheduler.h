// Continuous batching: a thread that owns a KvCache of `max_batch` rows
// ("slots") over a paged pool and decodes every admitted sequence one token
// per step. max_batch bounds the rows, the pool bounds the tokens: a request
// is admitted when a slot is free and the pool has the pages for its prompt
// and all its new tokens (reserved at admission, so a running row never
// runs out); otherwise it waits. Waiting requests take free slots
// round-robin by caller (BatchRequest::caller), each caller's in arrival
// order, so one caller's queue does not hold the others back; one that
// found no pages for its sequence is first in line until it gets them.
// A request that arrives joins the running batch at the next step: the
// scheduler loads the K/V it was given (e.g. pages fetched from the KV
// store) into a free slot's pages, runs the rest of the prompt through the
// model (the requests admitted together in batched forward passes), and from
// then on it advances with the others. A request that finishes or is
// cancelled leaves at once and frees its slot and pages; waiting requests take free
// slots as above.
//
// Each step runs Forward over slots [0, highest busy slot]: busy slots feed
// their last token at their own position (rows of unequal length, T == 1),
// idle slots in that range are parked on the pool's scratch page
// (BlockTables::Park) and feed a dummy token there.
// Admission takes the lowest free slot, so the range stays tight.
//
// With greedy sampling the tokens equal the offline Generator's (kOn) for
// the same prompt, whatever else is in the batch (tests check it).
//
// Callbacks (on_token, on_done) run on the scheduler's callback thread
// (engine/callback_runner.h), in order: a turn's callbacks run while the
// next turn's decode step does. They must not block: a callback that does
// holds every sequence in the batch one turn later. on_done is called
// exactly once per accepted request, and no callback follows it.
//
// Thread safety: Submit, Cancel and stats may be called from any thread.
#ifndef NANOSERVE_ENGINE_BATCH_SCHEDULER_H_
#define NANOSERVE_ENGINE_BATCH_SCHEDULER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <torch/types.h>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/log_rate.h"
#include "engine/callback_runner.h"
#include "engine/decode_step.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/sampler.h"

namespace nanoserve {

struct BatchSchedulerOptions {
  // Slots: sequences decoded together. >= 1.
  int64_t max_batch = 16;
  // Token capacity of each slot; 0 = the model's context (n_positions).
  int64_t capacity = 0;
  // Tokens the KV pool holds, over all slots; 0 = max_batch x capacity (every
  // slot full at once). Rounded up to whole pages.
  int64_t pool_tokens = 0;
  // Tokens per page of the pool. >= 1.
  int64_t page_size = kDefaultKvPageSize;
  // Requests waiting beyond the free slots: more are refused
  // (RESOURCE_EXHAUSTED). 0: only as many as there are free slots.
  int64_t max_queue = 1024;
  // 0: a request's prompt (what its pages do not cover) is computed when it
  // is admitted, all at once (with the others admitted in the same turn).
  // N > 0: a token budget per scheduler turn (Sarathi's): after the turn's
  // decode step, at most N prompt tokens in all are computed, given to the
  // prefilling requests oldest first, so that running requests keep
  // streaming at a bounded pace however many long prompts arrive (chunked
  // prefill).
  int64_t prefill_chunk = 0;
  // A turn longer than this many milliseconds is logged (stderr) with where
  // its time went: admitting (and the prompt pages' copies), waiting for the
  // turn before's callbacks, the decode step, prefill, posting the
  // callbacks; at most 10 lines a second (the rest counted in the next).
  // 0: never.
  int64_t slow_turn_ms = 0;
  int end_of_text_id = 50256;
  // The decode step: cuda-graph on a GPU (every batch-size bucket captured
  // when the scheduler starts) unless asked otherwise.
  DecodeKind decode = DecodeKind::kAuto;
};

struct BatchResult {
  std::vector<int> output_ids;
  std::string finish_reason;           // "stop" or "length"; empty on error
  int64_t computed_prompt_tokens = 0;  // prompt tokens run through the model here
  double queue_ms = 0;                 // Submit to admission into a slot
  double prompt_pages_ms = 0;          // writing prompt_pages or prompt_pool's into the slot
};

struct BatchRequest {
  std::vector<int> prompt;  // >= 1 token
  // Optional K/V of prompt[0, n), n <= prompt.size(), as a run of pages
  // (kv_store/page_layout.h): (n / page_size, n_layer, 2, n_head, page_size,
  // head_dim), any device and dtype. The rest of the prompt is computed here.
  torch::Tensor prompt_pages;
  // Or the same run as pages of another pool (the KV store's, mapped in
  // this process): prompt_pool[prompt_pool_pages[i]] for each i. Copied at
  // admission straight into the slot's pages when the page sizes agree (no
  // staging run), else gathered first; both dropped once copied.
  torch::Tensor prompt_pool;
  std::vector<int32_t> prompt_pool_pages;
  // The first output token if already chosen (e.g. by a prefill service),
  // else -1. Needed when prompt_pages cover the whole prompt.
  int first_token = -1;
  int64_t max_new_tokens = 16;  // >= 1; prompt + max_new_tokens <= capacity
  SamplingOptions sampling;
  bool stop_at_end_of_text = true;
  // Who asked (decode's caller key; "" is one caller like any other):
  // waiting requests of several callers are admitted round-robin by caller.
  std::string caller;
  // Each output token as it is made (the scheduler's callback thread).
  std::function<void(int token)> on_token;
  // Once at the end: OK with finish_reason "stop"/"length", CANCELLED after
  // Cancel, UNAVAILABLE at shutdown, INTERNAL on a LibTorch error.
  std::function<void(const absl::Status& status, const BatchResult& result)> on_done;
};

class BatchScheduler {
 public:
  // Allocates the slots' KvCache, makes the decode step and starts the
  // thread (which prepares the step before it takes requests). `model` is
  // not owned. INVALID_ARGUMENT for options out of range or a decode kind
  // that cannot run here; RESOURCE_EXHAUSTED if the pool does not fit.
  static absl::StatusOr<std::unique_ptr<BatchScheduler>> Create(
      const Gpt2Model* model, const BatchSchedulerOptions& options);
  // Shutdown().
  ~BatchScheduler();

  // Where the model and the slots' K/V live: prompt_pages already there
  // are written into the slots device to device.
  torch::Device device() const;

  // INVALID_ARGUMENT naming the first problem: empty prompt, an unknown
  // token id, prompt + max_new_tokens over the capacity or the pool, bad sampling
  // options, prompt_pages (or prompt_pool's) of the wrong shape or longer
  // than the prompt, both given, a page id outside prompt_pool, or
  // whole-prompt pages without first_token.
  absl::Status Validate(const BatchRequest& request) const;

  // Queues a request; returns its id. Validate's errors; RESOURCE_EXHAUSTED
  // when the queue is full; UNAVAILABLE after Shutdown.
  absl::StatusOr<uint64_t> Submit(BatchRequest request);

  // Queues several requests at once, all or none (Submit's errors, naming
  // the request): the scheduler admits them together, so the ones that get
  // slots at once are prefilled in shared forward passes. Returns their ids.
  absl::StatusOr<std::vector<uint64_t>> SubmitBatch(std::vector<BatchRequest> requests);

  // Ends a request (on_done with CANCELLED at the next step). Unknown or
  // finished ids are ignored.
  void Cancel(uint64_t id);

  // Ends every request with UNAVAILABLE (their on_done has run when this
  // returns) and joins the thread; idempotent. Not from a callback.
  void Shutdown();

  int64_t max_batch() const { return options_.max_batch; }
  int64_t max_queue() const { return options_.max_queue; }
  int64_t capacity() const { return capacity_; }
  // Pages of the pool (without the scratch page), and those free now.
  int64_t pool_pages() const { return pool_pages_; }
  int64_t active() const { return active_.load(); }
  int64_t queued() const { return queued_.load(); }
  int64_t steps() const { return steps_.load(); }
  // How long the scheduler thread has been on its current turn (admitting,
  // prefilling, one decode step, waiting for the last turn's callbacks), or
  // its callback thread on one turn's callbacks if longer: zero while both
  // wait for work. A loop that stopped stepping (a wedged kernel, a
  // callback that blocks) shows here growing without bound: decode's
  // liveness check.
  absl::Duration busy_for(absl::Time now = absl::Now()) const;
  // Batched prefills run (each one DecodeStep::Prefill over consecutive slots).
  int64_t prefills() const { return prefills_.load(); }
  // The most prompt tokens computed in one turn so far (with prefill_chunk
  // N > 0, at most N).
  int64_t max_turn_prompt_tokens() const { return max_turn_prompt_tokens_.load(); }
  // Turns longer than options.slow_turn_ms so far (0 while that is 0).
  int64_t slow_turns() const { return slow_turns_.load(); }
  // "reference" or "cuda-graph".
  std::string decode_step() const { return decode_->name(); }

 private:
  // A request's callbacks, shared with the callback thread's queue (which
  // may run them after the entry is gone).
  struct Callbacks {
    std::function<void(int token)> on_token;
    std::function<void(const absl::Status& status, const BatchResult& result)> on_done;
  };
  struct Entry {
    uint64_t id = 0;
    BatchRequest request;  // its callbacks moved to `callbacks`
    std::shared_ptr<const Callbacks> callbacks;
    std::unique_ptr<Sampler> sampler;
    BatchResult result;
    absl::Time submitted;
    int last_token = -1;
    bool prefilling = false;  // its prompt is being computed chunk by chunk
    bool page_bound = false;  // admitted once, and the pool had no pages for it
  };

  void Loop();
  // Removes and returns the waiting request to admit next: one that waits for
  // pages (first in line), else the oldest of the caller after the one last
  // admitted (callers in key order, wrapping). REQUIRES: mu_, waiting_ not
  // empty.
  std::unique_ptr<Entry> TakeNextLocked();
  // Ends the waiting and active requests whose ids are in `ids`.
  void HandleCancels(absl::flat_hash_set<uint64_t> ids);
  // Puts newly admitted requests into the lowest free slots, reserves their
  // pages and computes their prompts, in batches of consecutive slots.
  // Returns the requests the pool has no pages for yet (in order), to wait.
  std::vector<std::unique_ptr<Entry>> AdmitAll(std::vector<std::unique_ptr<Entry>> entries);
  // Prefills the prompts of `slots` (consecutive) in one DecodeStep::Prefill, at
  // most `budget` tokens each (0: the whole rest), and emits the first token
  // of those whose prompt is then complete. On a LibTorch error: one slot
  // ends with it; several are left as they were (lengths restored) for the
  // caller to retry one by one. Returns whether it succeeded.
  bool PrefillSlots(const std::vector<int64_t>& slots, const std::vector<int64_t>& budgets);
  // Writes a request's prompt_pages or prompt_pool's pages into its slot
  // (PrepareWrite done), sets its length, and drops them.
  absl::Status LoadPromptPages(int64_t slot, BatchRequest& request);
  // The turn's prompt tokens (options_.prefill_chunk) to the prefilling
  // slots, oldest request first.
  void AdvancePrefill();
  // PrefillSlots over each run of consecutive slots of `slots` (ascending),
  // slot i at most budgets[i] tokens (0: the whole rest): rows with as many
  // tokens left share forward passes; a run that fails is retried slot by
  // slot, so that only the slot that cannot be computed fails.
  void PrefillRuns(const std::vector<int64_t>& slots, const std::vector<int64_t>& budgets);
  // Where one turn's time went, for options_.slow_turn_ms.
  struct TurnTimes {
    absl::Time began;
    int64_t admitted = 0, rows = 0, prompt_tokens = 0;
    double admit_ms = 0, wait_ms = 0, step_ms = 0, step_model_ms = 0, prefill_ms = 0, post_ms = 0;
  };
  // Counts and logs the turn if it was slow.
  void NoteTurn(const TurnTimes& turn);
  // One decode step over the decoding rows; returns the milliseconds the
  // model and sampling took (0 when no row decodes).
  double Step();
  // Records `token` for the entry in `slot` (its on_token to the turn's
  // callbacks); ends it if it is done.
  void Emit(int64_t slot, int token);
  void Finish(int64_t slot, const absl::Status& status);
  // The entry's on_done to the turn's callbacks.
  void End(Entry& entry, const absl::Status& status);

  BatchScheduler(const Gpt2Model* model, const BatchSchedulerOptions& options, int64_t capacity,
                 std::unique_ptr<KvCache> cache, std::unique_ptr<DecodeStep> decode);

  const Gpt2Model* model_;
  const BatchSchedulerOptions options_;
  const int64_t capacity_;
  const std::unique_ptr<KvCache> cache_;  // scheduler thread only
  const int64_t pool_pages_;
  std::unique_ptr<DecodeStep> decode_;         // over cache_; scheduler thread only
  std::vector<std::unique_ptr<Entry>> slots_;  // scheduler thread only

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Entry>> waiting_;  // guarded by mu_
  absl::flat_hash_set<uint64_t> cancelled_;     // guarded by mu_
  uint64_t next_id_ = 1;                        // guarded by mu_
  bool stop_ = false;                           // guarded by mu_
  std::string last_caller_;                     // guarded by mu_; last admitted

  std::mutex join_mu_;  // serializes joining thread_
  std::atomic<int64_t> active_{0};
  std::atomic<int64_t> queued_{0};
  std::atomic<int64_t> steps_{0};
  // Unix nanoseconds the current turn began; 0 while waiting for work.
  std::atomic<int64_t> turn_began_ns_{0};
  std::atomic<int64_t> prefills_{0};
  std::atomic<int64_t> max_turn_prompt_tokens_{0};
  int64_t turn_prompt_tokens_ = 0;  // scheduler thread only
  // A first token was drawn in this turn's admissions (not given by the
  // request): only then are they posted before the step (scheduler thread).
  bool turn_drew_first_ = false;
  std::atomic<int64_t> slow_turns_{0};
  LogRate slow_log_rate_{10};             // scheduler thread only
  CallbackRunner::Batch turn_callbacks_;  // scheduler thread only; posted at the turn's end
  CallbackRunner callbacks_;
  std::thread thread_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_ENGINE_BATCH_SCHEDULER_H_
