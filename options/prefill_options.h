// nanoserve-prefill's command line as one struct (options/service_options.h
// says how the option structs and their flags fit): FromFlags in
// prefill_service/prefill_flags.h, ToArgv here.
#ifndef NANOSERVE_OPTIONS_PREFILL_OPTIONS_H_
#define NANOSERVE_OPTIONS_PREFILL_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "options/service_options.h"

namespace nanoserve {

struct PrefillOptions {
  // nanoserve-prefill, 127.0.0.1:50052, metrics 127.0.0.1:9152.
  static ServiceInfo Info();

  ServiceOptions service{Info()};
  StoreClientOptions store;
  int64_t prefill_chunk = 0;  // --prefill_chunk: prompt tokens per pass (0 = all)
  // --workers: threads serving calls; each call holds one while it waits for
  // its batch, so this bounds the calls that can share a batch.
  int64_t workers = 64;
  // --batch_window_ms: how long a call reaching an idle prefill waits for
  // others to share its batch (0 = only calls arriving while a batch runs
  // share the next).
  int64_t batch_window_ms = 0;
  // --slow_batch_ms: a batch longer than this is logged with when it began
  // and where its time went (PrefillStageOptions::slow_batch); 0 = never.
  int64_t slow_batch_ms = 0;
  // --kept_rows_tokens: the tokens of the rows prefill keeps from one batch
  // to the next (PrefillStageOptions::kept_rows_tokens); -1 = 16384 on a
  // GPU, none on the CPU; 0 = none (rows per batch).
  int64_t kept_rows_tokens = -1;
  // --store_match_min_tokens: a batch that could reuse fewer tokens from the
  // store is computed without asking it for a match
  // (PrefillStageOptions::store_match_min_tokens); -1 = measured at start
  // on a GPU, 0 on the CPU; 0 = always ask.
  int64_t store_match_min_tokens = -1;

  // Every flag: the service's, the store client's, then prefill's own.
  std::vector<std::string> ToArgv() const;
};

}  // namespace nanoserve

#endif  // NANOSERVE_OPTIONS_PREFILL_OPTIONS_H_
