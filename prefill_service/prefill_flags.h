// nanoserve-prefill's own flags, defined in prefill_flags.cc (link it only
// into the binary, and into the test that round-trips them):
// --prefill_chunk, --workers, --batch_window_ms, --slow_batch_ms. PrefillOptions
// (options/prefill_options.h) documents each. Also what the binary builds
// from them.
//
// Thread safety: call after InitService (rpc/service_main.h).
#ifndef NANOSERVE_PREFILL_SERVICE_PREFILL_FLAGS_H_
#define NANOSERVE_PREFILL_SERVICE_PREFILL_FLAGS_H_

#include "options/prefill_options.h"
#include "prefill_service/prefill_stage.h"

namespace nanoserve {

// Every flag nanoserve-prefill takes, as parsed: the shared ones
// (rpc/service_main.h), the store client's
// (kv_store/client/store_client_flags.h) and its own.
PrefillOptions PrefillOptionsFromFlags();

// The prefill stage's options in `options`: --prefill_chunk,
// --batch_window_ms and --slow_batch_ms.
PrefillStageOptions PrefillStageOptionsFor(const PrefillOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_PREFILL_SERVICE_PREFILL_FLAGS_H_
