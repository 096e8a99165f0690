// One measured point as a CSV row, the CSV schema shared with the HF peer
// (bench/hf_peer.py writes the same columns), and the median of repeats.
//
// Thread-compatible: plain functions and value types; a CsvWriter is used by
// one thread at a time.
#ifndef NANOSERVE_BENCH_RESULTS_H_
#define NANOSERVE_BENCH_RESULTS_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nanoserve {

// Median of `values`; the mean of the two middle values for an even count.
// REQUIRES: !values.empty().
double Median(std::vector<double> values);

struct BenchRow {
  std::string engine = "nanoserve";  // or "hf" (the peer)
  std::string card;                  // "NVIDIA H100 80GB HBM3", "AMD EPYC (2 threads)"
  std::string device;                // "cpu" or "cuda"
  std::string model;                 // the --model spec, e.g. "random:gpt2"
  double params_m = 0;               // parameters, millions
  std::string dtype;                 // fp32, bf16, fp16
  std::string attention;             // naive (HF eager) or fused (HF sdpa)
  std::string sweep;                 // prompt, output, prefix
  std::string kv_cache;              // off, on, prefix
  int64_t batch = 1;
  int64_t prompt_len = 0;  // per prompt, shared tokens included
  int64_t shared_len = 0;
  int64_t output_len = 0;  // per prompt
  int64_t repeats = 0;     // timed runs; the times below are their median
  double total_ms = 0;
  double total_ms_min = 0;
  double total_ms_max = 0;
  double ms_per_output_token = 0;  // total_ms / output_len
  double ttft_ms = 0;              // time to the first token of every prompt
  double decode_ms_per_step = 0;   // (total - ttft) / (output_len - 1)
  double tokens_per_second = 0;    // all prompts' output tokens / total
  int64_t prompt_tokens = 0;       // asked for, all prompts
  int64_t prompt_tokens_computed = 0;
  int64_t prompt_tokens_reused = 0;
  int64_t peak_mem_bytes = 0;      // CUDA allocator peak allocated, or peak RSS
  int64_t reserved_mem_bytes = 0;  // CUDA allocator peak reserved; 0 on CPU
  int64_t weights_bytes = 0;       // the model's parameters on the device
  std::string mem_source;          // cuda-allocator or process-rss
};

// `field` as one CSV field: quoted RFC 4180 style when it holds a comma,
// quote or newline, else as it is.
std::string CsvQuote(const std::string& field);

// The column names, in order; the first line of every bench CSV.
const std::vector<std::string>& CsvColumns();
std::string CsvHeader();
// One line (no newline) with BenchRow's fields in CsvColumns() order; text
// fields holding a comma, quote or newline are quoted RFC 4180 style.
std::string FormatCsvRow(const BenchRow& row);
// Splits one CSV line into fields (RFC 4180 quoting). For tests and tools.
std::vector<std::string> SplitCsvLine(const std::string& line);

// Writes a bench CSV, flushing after every row so that a run cut short keeps
// every point it finished.
class CsvWriter {
 public:
  // Creates or truncates `path` and writes the header. Errors: the OS's, as
  // a status naming the path.
  static absl::StatusOr<CsvWriter> Open(const std::string& path);
  CsvWriter(CsvWriter&& other) noexcept;
  CsvWriter& operator=(CsvWriter&&) = delete;
  ~CsvWriter();

  absl::Status Write(const BenchRow& row);

 private:
  CsvWriter(std::FILE* file, std::string path) : file_(file), path_(std::move(path)) {}
  std::FILE* file_;
  std::string path_;
};

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_RESULTS_H_
