#include "bench/load_sweep.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/subprocess.h"

namespace nanoserve {
namespace {

std::string LengthText(const LengthRange& r) {
  return r.min == r.max ? absl::StrCat(r.min) : absl::StrCat(r.min, ":", r.max);
}

// One line saying what a run sends.
std::string DescribeRun(const LoadClient& client, const LoadSweepOptions& o,
                        const LoadRunOptions& run) {
  const WorkloadOptions& w = o.workload;
  std::string prompts = w.prompts_file.empty()
                            ? absl::StrCat("prompt tokens ", LengthText(w.prompt_len))
                            : absl::StrCat("prompts from ", w.prompts_file);
  if (w.shared_prefix_len > 0 && w.shared_prefix_share > 0) {
    absl::StrAppendFormat(&prompts, " (%g of them start with the same %d tokens)",
                          w.shared_prefix_share, w.shared_prefix_len);
  }
  const std::string arrivals =
      std::isinf(run.rate) ? "all at once" : absl::StrFormat("Poisson %g req/s", run.rate);
  return absl::StrFormat(
      "nanoserve load: %s, %d requests, %s, concurrency %s, %s, output tokens %s, greedy, "
      "deadline %s, cache salt \"%s\"\n",
      client.Describe(), w.requests, arrivals,
      run.concurrency > 0 ? absl::StrCat(run.concurrency) : "unlimited", prompts,
      LengthText(w.output_len), absl::FormatDuration(run.timeout), run.cache_salt);
}

// An output file, or "" for none.
class OptionalFile {
 public:
  absl::Status Open(const std::string& path, const std::string& header) {
    if (path.empty()) return absl::OkStatus();
    path_ = path;
    out_.open(path);
    return Line(header);
  }
  absl::Status Line(const std::string& line) {
    if (path_.empty()) return absl::OkStatus();
    out_ << line << '\n';
    out_.flush();  // a run cut short keeps what it finished
    if (!out_) return absl::InternalError(absl::StrCat("cannot write ", path_));
    return absl::OkStatus();
  }

 private:
  std::string path_;
  std::ofstream out_;
};

absl::Status DrawPlot(const LoadSweepOptions& o) {
  auto child = Subprocess::Start(
      {"/usr/bin/env", "python3", o.plot_script, "--csv", o.sweep_csv_path, "--png", o.plot_path});
  if (!child.ok()) return child.status();
  absl::StatusOr<int> code = (*child)->Wait(absl::Minutes(2));
  if (!code.ok()) return code.status();
  if (*code != 0) {
    return absl::InternalError(absl::StrCat(o.plot_script, " exited with ", *code));
  }
  std::printf("\nplot: %s (from %s)\n", o.plot_path.c_str(), o.sweep_csv_path.c_str());
  return absl::OkStatus();
}

}  // namespace

absl::Status RunLoadSweep(LoadClient& client, const LoadSweepOptions& o) {
  if (o.rates.empty()) return absl::InvalidArgumentError("no request rate to run");
  if (!o.plot_path.empty() && o.sweep_csv_path.empty()) {
    return absl::InvalidArgumentError("a plot needs the sweep CSV");
  }
  if (absl::StatusOr<std::vector<LoadPrompt>> w = BuildWorkload(o.workload); !w.ok()) {
    return w.status();
  }
  OptionalFile csv, sweep_csv;
  if (absl::Status s = csv.Open(o.csv_path, RequestCsvHeader()); !s.ok()) return s;
  if (absl::Status s = sweep_csv.Open(o.sweep_csv_path, SweepCsvHeader()); !s.ok()) return s;
  const std::string salt_base = absl::StrCat("nanoserve-load-", absl::ToUnixMillis(absl::Now()));
  std::vector<std::pair<double, LoadSummary>> by_rate;
  for (size_t i = 0; i < o.rates.size(); ++i) {
    WorkloadOptions w = o.workload;
    w.seed += i;
    absl::StatusOr<std::vector<LoadPrompt>> workload = BuildWorkload(w);
    if (!workload.ok()) return workload.status();
    LoadRunOptions run = o.run;
    run.rate = o.rates[i];
    run.seed += i;
    if (o.fresh_cache_salt && run.cache_salt.empty())
      run.cache_salt = absl::StrCat(salt_base, "-", i);
    std::printf("%s%s\n", i > 0 ? "\n" : "", DescribeRun(client, o, run).c_str());
    std::fflush(stdout);
    const LoadRun result = RunLoad(client, *workload, run);
    const LoadSummary summary = Summarize(result.records, result.duration_s, o.slo);
    std::printf("%s", FormatSummaryTables(summary).c_str());
    std::fflush(stdout);
    for (const RequestRecord& r : result.records) {
      if (absl::Status s = csv.Line(FormatRequestCsvRow(run.rate, r)); !s.ok()) return s;
    }
    absl::Status s = sweep_csv.Line(FormatSweepCsvRow(run.rate, run.concurrency, summary));
    if (!s.ok()) return s;
    by_rate.emplace_back(run.rate, summary);
  }
  if (by_rate.size() > 1) std::printf("\n%s", FormatSweepTable(by_rate).c_str());
  return o.plot_path.empty() ? absl::OkStatus() : DrawPlot(o);
}

}  // namespace nanoserve
