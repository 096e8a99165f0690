// `nanoserve bench-services --front_door`: the same prompts through decode's
// gRPC Generate and through its OpenAI-compatible HTTP API (streamed, SSE),
// against one stack of services, alternating, batch 1, greedy: the time to
// the first token and per output token as each client sees it, and what the
// HTTP front door adds. Every prompt is sent once first, so both paths see
// it prefix-cached; both reuse one connection.
//
// Thread-compatible: one call at a time.
#ifndef NANOSERVE_BENCH_FRONT_DOOR_BENCH_H_
#define NANOSERVE_BENCH_FRONT_DOOR_BENCH_H_

#include "bench/services_bench.h"

namespace nanoserve {

// Prints a Markdown table on stdout; returns 0, or 1 after one line on
// stderr if the model, the services or a call failed (or the two paths'
// tokens differ).
int RunBenchFrontDoor(const BenchServicesOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_FRONT_DOOR_BENCH_H_
