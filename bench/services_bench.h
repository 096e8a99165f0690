// `nanoserve bench-services`: the same prompts through the offline engine
// (Generator, KV cache on, in this process) and through the three services
// started on loopback (ServiceStack), batch 1, greedy: time to first token
// and time per output token of both, the service's with a cold and with a
// prefix-cached prompt, whether the tokens agree, and the KV handoff rate
// (decode's page Fetch, then Fetch alone from this process).
//
// Thread-compatible: one call at a time.
#ifndef NANOSERVE_BENCH_SERVICES_BENCH_H_
#define NANOSERVE_BENCH_SERVICES_BENCH_H_

#include <cstdint>
#include <vector>

#include "client/service_client.h"

namespace nanoserve {

struct BenchServicesOptions {
  // The services to start; its model (attention included) is also the
  // offline engine's.
  ServiceStackOptions stack;
  // Prompt lengths in tokens, one table row each; lengths whose prompt plus
  // output do not fit the model's context are left out.
  std::vector<int64_t> prompt_lengths = {16, 128, 512};
  // Tokens generated per prompt (end of text does not stop them).
  int64_t max_new_tokens = 32;
  // Prompts per row (each sent cold, then again prefix-cached); the medians
  // are printed. The Fetch-alone table takes at least 5.
  int64_t repeats = 3;
};

// Runs the comparison and prints it as Markdown tables on stdout. Returns
// the process exit code: 0, or 1 after printing one line on stderr if the
// model, the services or a call failed.
int RunBenchServices(const BenchServicesOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_SERVICES_BENCH_H_
