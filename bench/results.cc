#include "bench/results.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace nanoserve {
namespace {

absl::Status WriteError(const std::string& path) {
  const int error = errno;
  return absl::Status(absl::ErrnoToStatusCode(error),
                      absl::StrCat("cannot write ", path, ": ", std::strerror(error)));
}

std::string Num(double v) { return absl::StrFormat("%.4f", v); }

}  // namespace

std::string CsvQuote(const std::string& field) {
  if (field.find_first_of(",\"\n\r") == std::string::npos) return field;
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

double Median(std::vector<double> values) {
  const size_t n = values.size();
  std::sort(values.begin(), values.end());
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
}

const std::vector<std::string>& CsvColumns() {
  static const auto* columns = new std::vector<std::string>{"engine",
                                                            "card",
                                                            "device",
                                                            "model",
                                                            "params_m",
                                                            "dtype",
                                                            "attention",
                                                            "sweep",
                                                            "kv_cache",
                                                            "batch",
                                                            "prompt_len",
                                                            "shared_len",
                                                            "output_len",
                                                            "repeats",
                                                            "total_ms",
                                                            "total_ms_min",
                                                            "total_ms_max",
                                                            "ms_per_output_token",
                                                            "ttft_ms",
                                                            "decode_ms_per_step",
                                                            "tokens_per_second",
                                                            "prompt_tokens",
                                                            "prompt_tokens_computed",
                                                            "prompt_tokens_reused",
                                                            "peak_mem_bytes",
                                                            "reserved_mem_bytes",
                                                            "weights_bytes",
                                                            "mem_source"};
  return *columns;
}

std::string CsvHeader() { return absl::StrJoin(CsvColumns(), ","); }

std::string FormatCsvRow(const BenchRow& r) {
  const std::vector<std::string> fields = {CsvQuote(r.engine),
                                           CsvQuote(r.card),
                                           CsvQuote(r.device),
                                           CsvQuote(r.model),
                                           absl::StrFormat("%.1f", r.params_m),
                                           CsvQuote(r.dtype),
                                           CsvQuote(r.attention),
                                           CsvQuote(r.sweep),
                                           CsvQuote(r.kv_cache),
                                           absl::StrCat(r.batch),
                                           absl::StrCat(r.prompt_len),
                                           absl::StrCat(r.shared_len),
                                           absl::StrCat(r.output_len),
                                           absl::StrCat(r.repeats),
                                           Num(r.total_ms),
                                           Num(r.total_ms_min),
                                           Num(r.total_ms_max),
                                           Num(r.ms_per_output_token),
                                           Num(r.ttft_ms),
                                           Num(r.decode_ms_per_step),
                                           Num(r.tokens_per_second),
                                           absl::StrCat(r.prompt_tokens),
                                           absl::StrCat(r.prompt_tokens_computed),
                                           absl::StrCat(r.prompt_tokens_reused),
                                           absl::StrCat(r.peak_mem_bytes),
                                           absl::StrCat(r.reserved_mem_bytes),
                                           absl::StrCat(r.weights_bytes),
                                           CsvQuote(r.mem_source)};
  return absl::StrJoin(fields, ",");
}

std::vector<std::string> SplitCsvLine(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  return fields;
}

absl::StatusOr<CsvWriter> CsvWriter::Open(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) {
    return WriteError(path);
  }
  CsvWriter writer(file, path);
  if (std::fprintf(file, "%s\n", CsvHeader().c_str()) < 0 || std::fflush(file) != 0) {
    return WriteError(path);
  }
  return writer;
}

CsvWriter::CsvWriter(CsvWriter&& other) noexcept
    : file_(std::exchange(other.file_, nullptr)), path_(std::move(other.path_)) {}

CsvWriter::~CsvWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status CsvWriter::Write(const BenchRow& row) {
  if (std::fprintf(file_, "%s\n", FormatCsvRow(row).c_str()) < 0 || std::fflush(file_) != 0) {
    return WriteError(path_);
  }
  return absl::OkStatus();
}

}  // namespace nanoserve
