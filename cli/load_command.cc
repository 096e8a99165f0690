#include "cli/load_command.h"

#include <cstdio>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/load_schedule.h"

namespace nanoserve {
namespace {

int Fail(const absl::Status& status, int code) {
  std::fprintf(stderr, "nanoserve load: %s\n", status.ToString().c_str());
  return code;
}

// The sweep's lists and lengths from the command line's strings.
absl::Status ParseLists(const LoadCommandOptions& o, LoadSweepOptions& sweep) {
  if (o.target.empty()) return absl::InvalidArgumentError("load needs --target HOST:PORT");
  if (o.rates.empty()) {
    if (!(o.rate > 0)) return absl::InvalidArgumentError("--rate must be > 0 (or inf)");
    sweep.rates = {o.rate};
  } else {
    absl::StatusOr<std::vector<double>> rates = ParseRateList(o.rates);
    if (!rates.ok()) return rates.status();
    sweep.rates = *rates;
  }
  absl::StatusOr<LengthRange> prompt = ParseLengthRange(o.prompt_len);
  if (!prompt.ok()) return prompt.status();
  absl::StatusOr<LengthRange> output = ParseLengthRange(o.output_len);
  if (!output.ok()) return output.status();
  sweep.workload.prompt_len = *prompt;
  sweep.workload.output_len = *output;
  if (sweep.plot_script.empty()) sweep.plot_script = NANOSERVE_LOAD_PLOT_SCRIPT;
  if (!sweep.plot_path.empty() && sweep.sweep_csv_path.empty()) {
    sweep.sweep_csv_path = absl::StrCat(absl::EndsWith(sweep.plot_path, ".png")
                                            ? sweep.plot_path.substr(0, sweep.plot_path.size() - 4)
                                            : sweep.plot_path,
                                        ".csv");
  }
  return absl::OkStatus();
}

}  // namespace

int RunLoadCommand(const LoadCommandOptions& o) {
  LoadSweepOptions sweep = o.sweep;
  if (absl::Status bad = ParseLists(o, sweep); !bad.ok()) return Fail(bad, 2);
  std::unique_ptr<LoadClient> client;
  if (o.http) {
    absl::StatusOr<std::unique_ptr<LoadClient>> http = MakeHttpLoadClient(o.target, o.model);
    if (!http.ok()) return Fail(http.status(), 1);
    client = *std::move(http);
  } else {
    client = MakeGrpcLoadClient(o.target, o.credentials);
  }
  const absl::Status done = RunLoadSweep(*client, sweep);
  if (!done.ok()) return Fail(done, absl::IsInvalidArgument(done) ? 2 : 1);
  return 0;
}

}  // namespace nanoserve
