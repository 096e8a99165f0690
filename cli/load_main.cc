// `nanoserve load`: the load generator against a running decode service
// (client/load_command.h). Also reads --target, --model, --prompts_file,
// --seed, --timeout_s, --cache_salt and the TLS flags.
#include <limits>
#include <string>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"
#include "cli/load_command.h"

ABSL_FLAG(bool, http, false,
          "load: --target is decode's OpenAI-compatible HTTP API (streamed /v1/completions)");
ABSL_FLAG(int64_t, requests, 100, "load: requests per run");
ABSL_FLAG(double, rate, std::numeric_limits<double>::infinity(),
          "load: Poisson arrival rate in requests/s (inf = all at once)");
ABSL_FLAG(std::string, rates, "", "load: a sweep over rates, e.g. 1,2,4,inf (wins over --rate)");
ABSL_FLAG(int64_t, concurrency, 0, "load: most requests in flight (0 = no limit)");
ABSL_FLAG(std::string, prompt_len, "128", "load: prompt tokens, N or A:B (uniform)");
ABSL_FLAG(std::string, output_len, "128", "load: output tokens, N or A:B (uniform)");
ABSL_FLAG(int64_t, vocab_size, 50257, "load: synthetic prompts draw token ids below this");
ABSL_FLAG(int64_t, shared_prefix_len, 0, "load: tokens of the common prefix");
ABSL_FLAG(double, shared_prefix_share, 0, "load: share of requests with the common prefix, 0..1");
ABSL_FLAG(double, slo_ttft_ms, 0, "load: goodput's bound on time to first token (0 = none)");
ABSL_FLAG(double, slo_tpot_ms, 0, "load: goodput's bound on time per output token (0 = none)");
ABSL_FLAG(std::string, csv, "", "load: per-request CSV");
ABSL_FLAG(std::string, sweep_csv, "", "load: one CSV line per rate (default with --plot: PNG.csv)");
ABSL_FLAG(std::string, plot, "", "load: throughput-vs-latency PNG (gnuplot)");

namespace nanoserve {

int LoadMain(const CommandContext& context) {
  LoadCommandOptions o;
  o.target = absl::GetFlag(FLAGS_target);
  o.http = absl::GetFlag(FLAGS_http);
  o.model = absl::GetFlag(FLAGS_model);
  o.credentials = context.credentials;
  o.rate = absl::GetFlag(FLAGS_rate);
  o.rates = absl::GetFlag(FLAGS_rates);
  o.prompt_len = absl::GetFlag(FLAGS_prompt_len);
  o.output_len = absl::GetFlag(FLAGS_output_len);
  WorkloadOptions& w = o.sweep.workload;
  w.requests = absl::GetFlag(FLAGS_requests);
  w.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  w.shared_prefix_len = absl::GetFlag(FLAGS_shared_prefix_len);
  w.shared_prefix_share = absl::GetFlag(FLAGS_shared_prefix_share);
  w.prompts_file = absl::GetFlag(FLAGS_prompts_file);
  w.seed = absl::GetFlag(FLAGS_seed);
  o.sweep.run.concurrency = absl::GetFlag(FLAGS_concurrency);
  o.sweep.run.seed = absl::GetFlag(FLAGS_seed);
  o.sweep.run.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  o.sweep.run.cache_salt = absl::GetFlag(FLAGS_cache_salt);
  o.sweep.slo.ttft_ms = absl::GetFlag(FLAGS_slo_ttft_ms);
  o.sweep.slo.tpot_ms = absl::GetFlag(FLAGS_slo_tpot_ms);
  o.sweep.csv_path = absl::GetFlag(FLAGS_csv);
  o.sweep.sweep_csv_path = absl::GetFlag(FLAGS_sweep_csv);
  o.sweep.plot_path = absl::GetFlag(FLAGS_plot);
  return RunLoadCommand(o);
}

}  // namespace nanoserve
