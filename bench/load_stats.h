// What a `nanoserve load` run measured: one record per request as its client
// saw it, and their statistics: throughput, TTFT, time per output token
// (TPOT), inter-token latency (ITL) and end-to-end latency at mean, p50,
// p90 and p99, and goodput under a latency objective (SLO). The tables and
// CSV rows of the command come from here.
//
// Definitions (vLLM's benchmark_serving): TTFT = request sent to its first
// token; TPOT = (end-to-end - TTFT) / (output tokens - 1), per request, 0
// for a one-token output; ITL = the gaps between a request's consecutive
// token arrivals (tokens that arrive together count 0), pooled over all
// requests; throughput = sums over the ok requests / the run's duration;
// goodput = ok requests meeting every bound of the SLO / duration.
//
// Thread-compatible: plain functions and value types.
#ifndef NANOSERVE_BENCH_LOAD_STATS_H_
#define NANOSERVE_BENCH_LOAD_STATS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nanoserve {

// The server's own account of one request, in ms: decode's Finished timings
// (gRPC only; the HTTP API sends none). Where a request's time goes inside
// the services.
struct ServerTimings {
  double ttft_ms = 0;                 // arrival at decode to its first token
  double prefill_ms = 0;              // the Prefill call, as decode saw it
  double prefill_first_token_ms = 0;  // the call's start to prefill's first-token message
  double prefill_server_ms = 0;       // inside prefill: its whole time (batch wait included)
  double prefill_store_ms = 0;        //   of which KV store calls
  double prefill_compute_ms = 0;      //   of which the forward pass and sampling
  double fetch_ms = 0;                // the prompt's pages read into the slot
  double submitted_ms = 0;            // arrival to the hand-over to decode's scheduler
  double queue_ms = 0;                // then waiting for a decode slot
  double second_token_ms = 0;         // arrival to the second token
  // The pages were read by the ids prefill returned (no Fetch call).
  bool kv_fetch_skipped = false;
  // Why decode computed the prompt itself (prefill or the store failed or
  // refused); empty when prefill and the store served it.
  std::string fallback_reason;
};

// One request of a run.
struct RequestRecord {
  int64_t index = 0;  // its place in the workload
  bool ok = false;    // the call completed
  std::string error;  // why not, when !ok
  bool shared_prefix = false;
  double start_s = 0;                   // sent, seconds after the run began
  int64_t prompt_tokens = 0;            // as the server counted them (0 if unknown)
  int64_t cached_prompt_tokens = 0;     // the server's prefix cache hit
  int64_t max_tokens = 0;               // output tokens asked for
  int64_t output_tokens = 0;            // output tokens received
  double ttft_ms = 0;                   // 0 when no token came
  double e2e_ms = 0;                    // sent to the end of the call
  std::vector<double> itl_ms;           // output_tokens - 1 gaps when ok
  std::optional<ServerTimings> server;  // when the server sent its account

  // (e2e - ttft) / (output_tokens - 1); 0 for fewer than 2 tokens.
  double tpot_ms() const;
};

// Latency bounds; 0 = no bound.
struct Slo {
  double ttft_ms = 0;
  double tpot_ms = 0;
};

// An ok request within every bound of `slo`.
bool MeetsSlo(const RequestRecord& record, const Slo& slo);

// The p-th percentile (0 <= p <= 100) of `values`, linear between the two
// nearest ranks (numpy's default). REQUIRES: !values.empty().
double Percentile(std::vector<double> values, double p);

// mean, p50, p90, p99 of a sample; all 0 for an empty one.
struct Distribution {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
};
Distribution Distribute(const std::vector<double>& values);

struct LoadSummary {
  int64_t ok = 0, failed = 0;
  double duration_s = 0;  // first send to the last call's end
  int64_t prompt_tokens = 0, cached_prompt_tokens = 0, output_tokens = 0;  // ok requests
  double request_throughput = 0;                                           // ok requests / s
  double output_throughput = 0;                                            // output tokens / s
  double total_token_throughput = 0;              // (prompt + output tokens) / s
  Distribution ttft_ms, tpot_ms, itl_ms, e2e_ms;  // over the ok requests
  // The first inter-token gap of each ok request of 2+ tokens: in the
  // services, the second token waits for admission into a decode slot.
  Distribution second_token_ms;
  // The servers' accounts (ServerTimings) over the ok requests that had one,
  // by name in ServerTimings' order; empty when none had.
  std::vector<std::pair<std::string, Distribution>> server_ms;
  Slo slo;
  int64_t good = 0;    // ok requests meeting the SLO
  double goodput = 0;  // good / duration_s
  // Failed requests by error text, most frequent first.
  std::vector<std::pair<std::string, int64_t>> errors;
  // Ok requests whose prompt decode computed itself, by the server's
  // fallback reason, most frequent first (none without the server's
  // account, or when prefill and the store served every prompt).
  std::vector<std::pair<std::string, int64_t>> fallbacks;
};

// The statistics of `records`, run over `duration_s` (> 0 when any is ok).
LoadSummary Summarize(const std::vector<RequestRecord>& records, double duration_s, const Slo& slo);

// The summary as Markdown: a table of counts and throughput (goodput with
// its SLO), a table of latencies (ms: mean, p50, p90, p99), the servers'
// account when there is one, then up to 5 lines each of the servers'
// fallback reasons and of errors.
std::string FormatSummaryTables(const LoadSummary& summary);

// A sweep's table: one Markdown row per rate (0 rows allowed).
std::string FormatSweepTable(const std::vector<std::pair<double, LoadSummary>>& by_rate);

// The per-request CSV: its header line, and one record's line (no
// newlines); `rate` is the run's request rate ("inf" for all at once).
std::string RequestCsvHeader();
std::string FormatRequestCsvRow(double rate, const RequestRecord& record);

// The sweep CSV (one line per rate), what bench/load_plot.py draws.
std::string SweepCsvHeader();
std::string FormatSweepCsvRow(double rate, int64_t concurrency, const LoadSummary& summary);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_LOAD_STATS_H_
