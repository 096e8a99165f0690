#include "bench/load_stats.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/results.h"

namespace nanoserve {
namespace {

std::string RateText(double rate) { return std::isinf(rate) ? "inf" : absl::StrFormat("%g", rate); }

std::string SloText(const Slo& slo) {
  std::vector<std::string> bounds;
  if (slo.ttft_ms > 0) bounds.push_back(absl::StrFormat("TTFT <= %g ms", slo.ttft_ms));
  if (slo.tpot_ms > 0) bounds.push_back(absl::StrFormat("TPOT <= %g ms", slo.tpot_ms));
  return bounds.empty() ? "no SLO: every ok request" : absl::StrJoin(bounds, ", ");
}

std::string LatencyRow(const char* name, const Distribution& d) {
  return absl::StrFormat("| %s | %.2f | %.2f | %.2f | %.2f |\n", name, d.mean, d.p50, d.p90, d.p99);
}

// The non-empty texts `text_of` gives the records (an error, a fallback
// reason), counted, most frequent first (ties: by text).
template <typename F>
std::vector<std::pair<std::string, int64_t>> CountTexts(const std::vector<RequestRecord>& records,
                                                        F text_of) {
  std::map<std::string, int64_t> counts;
  for (const RequestRecord& r : records) {
    if (std::string text = text_of(r); !text.empty()) ++counts[text];
  }
  std::vector<std::pair<std::string, int64_t>> errors(counts.begin(), counts.end());
  std::stable_sort(errors.begin(), errors.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  return errors;
}

// ServerTimings' fields with their table names, in order.
struct ServerField {
  const char* name;
  double ServerTimings::*ms;
};
constexpr ServerField kServerFields[] = {
    {"TTFT at decode", &ServerTimings::ttft_ms},
    {"Prefill call", &ServerTimings::prefill_ms},
    {"Prefill call to its first token", &ServerTimings::prefill_first_token_ms},
    {"inside prefill: all", &ServerTimings::prefill_server_ms},
    {"inside prefill: KV store calls", &ServerTimings::prefill_store_ms},
    {"inside prefill: forward + sampling", &ServerTimings::prefill_compute_ms},
    {"K/V pages into the slot", &ServerTimings::fetch_ms},
    {"handed to the scheduler", &ServerTimings::submitted_ms},
    {"queue for a slot", &ServerTimings::queue_ms},
    {"second token at decode", &ServerTimings::second_token_ms},
};

}  // namespace

double RequestRecord::tpot_ms() const {
  return output_tokens > 1 ? (e2e_ms - ttft_ms) / (output_tokens - 1) : 0;
}

bool MeetsSlo(const RequestRecord& r, const Slo& slo) {
  return r.ok && (slo.ttft_ms <= 0 || r.ttft_ms <= slo.ttft_ms) &&
         (slo.tpot_ms <= 0 || r.tpot_ms() <= slo.tpot_ms);
}

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * (values.size() - 1);
  const auto below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (rank - below) * (values[above] - values[below]);
}

Distribution Distribute(const std::vector<double>& values) {
  Distribution d;
  d.count = static_cast<int64_t>(values.size());
  if (values.empty()) return d;
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  d.p50 = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  return d;
}

LoadSummary Summarize(const std::vector<RequestRecord>& records, double duration_s,
                      const Slo& slo) {
  LoadSummary s;
  s.duration_s = duration_s;
  s.slo = slo;
  std::vector<double> ttft, tpot, itl, e2e, second;
  std::vector<std::vector<double>> server(std::size(kServerFields));
  std::vector<double> after_admission;  // admission to the second token
  for (const RequestRecord& r : records) {
    if (!r.ok) {
      ++s.failed;
      continue;
    }
    ++s.ok;
    s.prompt_tokens += r.prompt_tokens;
    s.cached_prompt_tokens += r.cached_prompt_tokens;
    s.output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_ms);
    tpot.push_back(r.tpot_ms());
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    e2e.push_back(r.e2e_ms);
    if (!r.itl_ms.empty()) second.push_back(r.itl_ms.front());
    if (r.server.has_value()) {
      for (size_t i = 0; i < server.size(); ++i)
        server[i].push_back(*r.server.*kServerFields[i].ms);
      const ServerTimings& t = *r.server;
      if (t.second_token_ms > 0) {
        after_admission.push_back(t.second_token_ms - t.submitted_ms - t.queue_ms);
      }
    }
    if (MeetsSlo(r, slo)) ++s.good;
  }
  if (duration_s > 0) {
    s.request_throughput = s.ok / duration_s;
    s.output_throughput = s.output_tokens / duration_s;
    s.total_token_throughput = (s.prompt_tokens + s.output_tokens) / duration_s;
    s.goodput = s.good / duration_s;
  }
  s.ttft_ms = Distribute(ttft);
  s.tpot_ms = Distribute(tpot);
  s.itl_ms = Distribute(itl);
  s.e2e_ms = Distribute(e2e);
  s.second_token_ms = Distribute(second);
  if (!server.front().empty()) {
    for (size_t i = 0; i < server.size(); ++i) {
      s.server_ms.emplace_back(kServerFields[i].name, Distribute(server[i]));
    }
    // What the scheduler's turns cost a request once admitted: about one
    // step, unless the turn that admitted it was long.
    s.server_ms.emplace_back("admission to the second token", Distribute(after_admission));
  }
  s.errors = CountTexts(records, [](const RequestRecord& r) { return r.ok ? "" : r.error; });
  s.fallbacks = CountTexts(records, [](const RequestRecord& r) {
    return r.ok && r.server.has_value() ? r.server->fallback_reason : "";
  });
  return s;
}

std::string FormatSummaryTables(const LoadSummary& s) {
  std::string out = "| | |\n|---|---|\n";
  absl::StrAppendFormat(&out, "| requests ok / failed | %d / %d |\n", s.ok, s.failed);
  absl::StrAppendFormat(&out, "| duration s | %.2f |\n", s.duration_s);
  absl::StrAppendFormat(&out, "| prompt tokens (cached) / output tokens | %d (%d) / %d |\n",
                        s.prompt_tokens, s.cached_prompt_tokens, s.output_tokens);
  absl::StrAppendFormat(&out, "| request throughput req/s | %.3f |\n", s.request_throughput);
  absl::StrAppendFormat(&out, "| output token throughput tok/s | %.1f |\n", s.output_throughput);
  absl::StrAppendFormat(&out, "| total token throughput tok/s | %.1f |\n",
                        s.total_token_throughput);
  absl::StrAppendFormat(&out, "| goodput req/s (%s) | %.3f (%d of %d ok) |\n", SloText(s.slo),
                        s.goodput, s.good, s.ok);
  out += "\n| latency ms | mean | p50 | p90 | p99 |\n|---|---|---|---|---|\n";
  out += LatencyRow("TTFT", s.ttft_ms);
  out += LatencyRow("TPOT", s.tpot_ms);
  out += LatencyRow("ITL", s.itl_ms);
  out += LatencyRow("end to end", s.e2e_ms);
  out += LatencyRow("second token's gap", s.second_token_ms);
  if (!s.server_ms.empty()) {
    absl::StrAppendFormat(&out,
                          "\n| the server's account ms (%d requests) | mean | p50 | p90 | p99 |\n"
                          "|---|---|---|---|---|\n",
                          s.server_ms.front().second.count);
    for (const auto& [name, d] : s.server_ms) out += LatencyRow(name.c_str(), d);
  }
  for (size_t i = 0; i < s.fallbacks.size() && i < 5; ++i) {
    absl::StrAppendFormat(&out, "\ndecode computed the prompt itself x%d: %s",
                          s.fallbacks[i].second, s.fallbacks[i].first);
  }
  if (!s.fallbacks.empty()) out += "\n";
  for (size_t i = 0; i < s.errors.size() && i < 5; ++i) {
    absl::StrAppendFormat(&out, "\nfailed x%d: %s", s.errors[i].second, s.errors[i].first);
  }
  if (!s.errors.empty()) out += "\n";
  return out;
}

std::string FormatSweepTable(const std::vector<std::pair<double, LoadSummary>>& by_rate) {
  std::string out =
      "| rate req/s | ok | failed | req/s | output tok/s | TTFT p50 | TTFT p90 | TTFT p99 | "
      "TPOT p50 | TPOT p90 | TPOT p99 | ITL p50 | ITL p99 | goodput req/s |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& [rate, s] : by_rate) {
    absl::StrAppendFormat(&out,
                          "| %s | %d | %d | %.3f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | "
                          "%.2f | %.2f | %.2f | %.3f |\n",
                          RateText(rate), s.ok, s.failed, s.request_throughput, s.output_throughput,
                          s.ttft_ms.p50, s.ttft_ms.p90, s.ttft_ms.p99, s.tpot_ms.p50, s.tpot_ms.p90,
                          s.tpot_ms.p99, s.itl_ms.p50, s.itl_ms.p99, s.goodput);
  }
  return out;
}

std::string RequestCsvHeader() {
  return "rate,index,ok,error,shared_prefix,start_s,prompt_tokens,cached_prompt_tokens,"
         "max_tokens,output_tokens,ttft_ms,tpot_ms,itl_max_ms,e2e_ms,server_ttft_ms,"
         "server_prefill_ms,server_prefill_first_token_ms,server_prefill_server_ms,"
         "server_prefill_store_ms,server_prefill_compute_ms,server_fetch_ms,server_submitted_ms,"
         "server_queue_ms,server_second_token_ms,server_kv_fetch_skipped,server_fallback_reason";
}

std::string FormatRequestCsvRow(double rate, const RequestRecord& r) {
  const double itl_max = r.itl_ms.empty() ? 0 : *std::max_element(r.itl_ms.begin(), r.itl_ms.end());
  std::string row =
      absl::StrFormat("%s,%d,%d,%s,%d,%.4f,%d,%d,%d,%d,%.3f,%.3f,%.3f,%.3f", RateText(rate),
                      r.index, r.ok ? 1 : 0, CsvQuote(r.error), r.shared_prefix ? 1 : 0, r.start_s,
                      r.prompt_tokens, r.cached_prompt_tokens, r.max_tokens, r.output_tokens,
                      r.ttft_ms, r.tpot_ms(), itl_max, r.e2e_ms);
  for (const ServerField& field : kServerFields) {  // empty fields without the server's account
    row += r.server.has_value() ? absl::StrFormat(",%.3f", *r.server.*field.ms) : ",";
  }
  row += r.server.has_value() ? absl::StrCat(",", r.server->kv_fetch_skipped ? 1 : 0, ",",
                                             CsvQuote(r.server->fallback_reason))
                              : ",,";
  return row;
}

std::string SweepCsvHeader() {
  return "rate,concurrency,ok,failed,duration_s,request_throughput,output_throughput,"
         "ttft_mean_ms,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,tpot_mean_ms,tpot_p50_ms,tpot_p90_ms,"
         "tpot_p99_ms,itl_p50_ms,itl_p90_ms,itl_p99_ms,e2e_p50_ms,e2e_p99_ms,goodput";
}

std::string FormatSweepCsvRow(double rate, int64_t concurrency, const LoadSummary& s) {
  return absl::StrFormat(
      "%s,%d,%d,%d,%.4f,%.4f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,"
      "%.3f,%.4f",
      RateText(rate), concurrency, s.ok, s.failed, s.duration_s, s.request_throughput,
      s.output_throughput, s.ttft_ms.mean, s.ttft_ms.p50, s.ttft_ms.p90, s.ttft_ms.p99,
      s.tpot_ms.mean, s.tpot_ms.p50, s.tpot_ms.p90, s.tpot_ms.p99, s.itl_ms.p50, s.itl_ms.p90,
      s.itl_ms.p99, s.e2e_ms.p50, s.e2e_ms.p99, s.goodput);
}

}  // namespace nanoserve
