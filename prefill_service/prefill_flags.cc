#include "prefill_service/prefill_flags.h"

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "base/flag_range.h"
#include "kv_store/client/store_client_flags.h"
#include "rpc/service_main.h"

NANOSERVE_FLAG_IN_RANGE(prefill_chunk, nanoserve::PrefillOptions().prefill_chunk, 0, 1048576,
                        "prompt tokens per pass (0 = all)");
NANOSERVE_FLAG_IN_RANGE(workers, nanoserve::PrefillOptions().workers, 1, 1024,
                        "threads serving calls: each call holds one while it waits for its batch, "
                        "so this bounds the calls that can share a batch");
NANOSERVE_FLAG_IN_RANGE(batch_window_ms, nanoserve::PrefillOptions().batch_window_ms, 0, 1000,
                        "how long a call reaching an idle prefill waits for others to share its "
                        "batch (0 = only calls arriving while a batch runs share the next)");
NANOSERVE_FLAG_IN_RANGE(slow_batch_ms, nanoserve::PrefillOptions().slow_batch_ms, 0, 86400000,
                        "a batch longer than this is logged to stderr with when it began and where "
                        "its time went (0 = never)");
NANOSERVE_FLAG_IN_RANGE(kept_rows_tokens, nanoserve::PrefillOptions().kept_rows_tokens, -1, 1048576,
                        "tokens of the rows prefill keeps from one batch to the next, so that its "
                        "CUDA graphs are captured once (-1 = 16384 on a GPU, none on the CPU; "
                        "0 = rows per batch)");
NANOSERVE_FLAG_IN_RANGE(store_match_min_tokens, nanoserve::PrefillOptions().store_match_min_tokens,
                        -1, 1048576,
                        "a batch that could reuse fewer prompt tokens from the kv store is "
                        "computed without asking it for a match, a round trip before the first "
                        "token (-1 = measured at start on a GPU: the round trip over a token's "
                        "prefill time; 0 on the CPU; 0 = always ask)");

namespace nanoserve {

PrefillOptions PrefillOptionsFromFlags() {
  PrefillOptions options;
  options.service = ServiceOptionsFromFlags();
  options.store = StoreClientOptionsFromFlags();
  options.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.batch_window_ms = absl::GetFlag(FLAGS_batch_window_ms);
  options.slow_batch_ms = absl::GetFlag(FLAGS_slow_batch_ms);
  options.kept_rows_tokens = absl::GetFlag(FLAGS_kept_rows_tokens);
  options.store_match_min_tokens = absl::GetFlag(FLAGS_store_match_min_tokens);
  return options;
}

PrefillStageOptions PrefillStageOptionsFor(const PrefillOptions& options) {
  PrefillStageOptions stage;
  stage.prefill_chunk = options.prefill_chunk;
  stage.batch_window = absl::Milliseconds(options.batch_window_ms);
  stage.slow_batch = absl::Milliseconds(options.slow_batch_ms);
  stage.kept_rows_tokens = options.kept_rows_tokens;
  stage.store_match_min_tokens = options.store_match_min_tokens;
  return stage;
}

}  // namespace nanoserve
