#include "bench/runner.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <torch/utils.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/dtype.h"
#include "bench/progress.h"
#include "bench/results.h"
#include "engine/device.h"
#include "engine/model_loader.h"
#include "kv_cache/prefix_cache.h"

namespace nanoserve {
namespace {

// The value after "key:" on the first line of `path` that starts with `key`.
std::string FieldOf(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, key) && line.find(':') != std::string::npos) {
      return std::string(absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)));
    }
  }
  return "";
}

// The model name the NVIDIA driver gives the first GPU it lists (by PCI
// address), "" if there is none. Plain POSIX: no std::filesystem beside
// LibTorch, and no CUDA headers.
std::string FirstNvidiaGpuModel() {
  const std::string root = "/proc/driver/nvidia/gpus";
  DIR* dir = opendir(root.c_str());
  if (dir == nullptr) return "";
  std::vector<std::string> entries;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') entries.emplace_back(e->d_name);
  }
  closedir(dir);
  if (entries.empty()) return "";
  std::sort(entries.begin(), entries.end());
  return FieldOf(root + "/" + entries[0] + "/information", "Model");
}

}  // namespace

std::string CardName(const torch::Device& device) {
  if (device.is_cuda()) {
    const std::string model = FirstNvidiaGpuModel();
    return model.empty() ? absl::StrCat("CUDA device ", device.index() < 0 ? 0 : device.index())
                         : model;
  }
  std::string name = FieldOf("/proc/cpuinfo", "model name");
  if (name.empty()) name = "unknown CPU";
  const int threads = torch::get_num_threads();
  return absl::StrCat(name, " (", threads, threads == 1 ? " thread)" : " threads)");
}

namespace {

// An empty prefix cache big enough for every prompt of `point`.
absl::StatusOr<std::unique_ptr<PrefixCache>> MakePrefixCache(const Gpt2Model& model,
                                                             const BenchPoint& point,
                                                             int64_t page_size) {
  const Gpt2Config& c = model.config();
  const int64_t elem = torch::elementSize(model.options().dtype);
  const int64_t bytes_per_token = 2 * c.n_layer * c.n_embd * elem;
  // The pool is the only home of K/V: every row's prompt and output (shared
  // prefixes counted once per row: an upper bound), and a scratch page.
  const int64_t tokens =
      point.batch * (point.prompt_len + point.output_len + page_size) + 2 * page_size;
  PrefixCacheOptions options;
  options.pool.layout = KvPageLayout(c, model.options().dtype, page_size);
  options.pool.byte_budget = tokens * bytes_per_token;
  options.pool.device = model.options().device;
  return PrefixCache::Create(options);
}

// A point's generator, kept across its warm-ups and repeats (so that the
// step's CUDA graphs, prefill's and decode's, are captured in the warm-ups
// and replayed in the timed runs, as a server replays them), and its prefix
// cache in prefix mode.
struct PointRunner {
  std::unique_ptr<PrefixCache> cache;
  std::unique_ptr<Generator> generator;
};

absl::StatusOr<PointRunner> MakeRunner(const Gpt2Model& model, const BenchPoint& point,
                                       int64_t page_size) {
  PointRunner runner;
  if (point.mode == KvCacheMode::kPrefix) {
    auto created = MakePrefixCache(model, point, page_size);
    if (!created.ok()) return created.status();
    runner.cache = *std::move(created);
  }
  runner.generator = std::make_unique<Generator>(&model, runner.cache.get());
  return runner;
}

// Runs `point` once; prefix mode starts from an empty cache (the last run's
// pages evicted: reuse is within the batch).
// `capacity`: the rows' tokens (the timed runs', for the warm-ups too).
absl::StatusOr<GenerateResult> RunOnce(PointRunner& runner, const BenchPoint& point,
                                       const std::vector<std::vector<int>>& prompts,
                                       int64_t capacity, DecodeKind decode) {
  if (runner.cache != nullptr) runner.cache->EvictAll();
  GenerateOptions options;
  options.decode = decode;
  options.min_capacity = capacity;
  options.max_new_tokens = point.output_len;
  options.kv_cache = point.mode;
  options.stop_at_end_of_text = false;
  return runner.generator->Generate(prompts, options);
}

// A point's row and the greedy tokens of its last timed run, per prompt.
struct Measured {
  BenchRow row;
  std::vector<std::vector<int>> outputs;
};

// Warm-up and timed repeats of one point, as a row (model fields unset).
absl::StatusOr<Measured> MeasurePoint(const Gpt2Model& model, const BenchPoint& point,
                                      const BenchOptions& options) {
  const torch::Device device = model.options().device;
  const auto prompts = MakePrompts(point, model.config().vocab_size, options.seed);
  ReleaseCachedMemory(device);
  // Warm-ups are short: they settle the allocator and kernel choices for
  // the prompt's shapes; the median of the repeats absorbs the rest.
  BenchPoint warm = point;
  warm.output_len = std::min<int64_t>(point.output_len, 4);
  absl::StatusOr<PointRunner> runner = MakeRunner(model, point, options.page_size);
  if (!runner.ok()) return runner.status();
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, p.size());
  const int64_t capacity = longest + point.output_len;
  for (int64_t i = 0; i < options.warmup; ++i) {
    auto stats = RunOnce(*runner, warm, prompts, capacity, options.decode);
    if (!stats.ok()) return stats.status();
  }
  std::vector<GenerateStats> runs;
  Measured measured;
  for (int64_t i = 0; i < options.repeats; ++i) {
    auto result = RunOnce(*runner, point, prompts, capacity, options.decode);
    if (!result.ok()) return result.status();
    runs.push_back(result->stats);
    measured.outputs.clear();
    for (const SequenceResult& s : result->sequences) measured.outputs.push_back(s.output_ids);
  }
  auto median = [&](auto field) {
    std::vector<double> values;
    for (const GenerateStats& s : runs) values.push_back(static_cast<double>(field(s)));
    return Median(values);
  };
  BenchRow& row = measured.row;
  row.sweep = SweepKindName(point.sweep);
  row.kv_cache = KvCacheModeName(point.mode);
  row.attention = AttentionKindName(point.attention);
  row.batch = point.batch;
  row.prompt_len = point.prompt_len;
  row.shared_len = point.shared_len;
  row.output_len = point.output_len;
  row.repeats = options.repeats;
  row.total_ms = median([](const GenerateStats& s) { return s.total_ms; });
  std::vector<double> totals;
  for (const GenerateStats& s : runs) totals.push_back(s.total_ms);
  row.total_ms_min = *std::min_element(totals.begin(), totals.end());
  row.total_ms_max = *std::max_element(totals.begin(), totals.end());
  row.ms_per_output_token = median([](const GenerateStats& s) { return s.ms_per_output_token; });
  row.ttft_ms = median([](const GenerateStats& s) { return s.ttft_ms; });
  row.decode_ms_per_step = median([](const GenerateStats& s) { return s.decode_ms_per_step; });
  row.tokens_per_second = median([](const GenerateStats& s) { return s.tokens_per_second; });
  row.prompt_tokens = runs[0].prompt_tokens;
  row.prompt_tokens_computed = runs[0].prompt_tokens_computed;
  row.prompt_tokens_reused = runs[0].prompt_tokens_reused;
  row.peak_mem_bytes =
      static_cast<int64_t>(median([](const GenerateStats& s) { return s.memory.peak_bytes; }));
  row.reserved_mem_bytes =
      static_cast<int64_t>(median([](const GenerateStats& s) { return s.memory.reserved_bytes; }));
  row.mem_source = runs[0].memory.source;
  return measured;
}

// One generation of each mode on a small input: first-call costs (library
// initialisation, kernel selection) stay out of the first point.
absl::Status WarmUpModel(const Gpt2Model& model, const BenchOptions& options) {
  BenchPoint point;
  point.prompt_len = std::min<int64_t>(32, model.config().n_positions / 2);
  point.output_len = 4;
  for (KvCacheMode mode : {KvCacheMode::kOff, KvCacheMode::kOn, KvCacheMode::kPrefix}) {
    point.mode = mode;
    point.batch = mode == KvCacheMode::kPrefix ? 2 : 1;
    auto prompts = MakePrompts(point, model.config().vocab_size, options.seed + 1);
    absl::StatusOr<PointRunner> runner = MakeRunner(model, point, options.page_size);
    if (!runner.ok()) return runner.status();
    auto stats = RunOnce(*runner, point, prompts, 0, options.decode);
    if (!stats.ok()) return stats.status();
  }
  return absl::OkStatus();
}

// "yes" or "no" for a point compared with the one before it, "" otherwise.
std::string SameTokensText(const std::optional<bool>& same) {
  return same.has_value() ? (*same ? "yes" : "no") : "";
}

std::string ResultLine(const BenchResult& result) {
  const BenchRow& r = result.row;
  return absl::StrFormat(
      "%-6s %-6s B=%-3d P=%-4d S=%-4d O=%-4d total %9.1f ms  %8.2f ms/token  "
      "ttft %8.1f ms  peak %7.1f MiB%s",
      r.sweep, r.kv_cache, r.batch, r.prompt_len, r.shared_len, r.output_len, r.total_ms,
      r.ms_per_output_token, r.ttft_ms, r.peak_mem_bytes / 1048576.0,
      result.same_tokens == false ? "  TOKENS DIFFER" : "");
}

void PrintTable(const std::vector<BenchResult>& results) {
  absl::PrintF(
      "| model | attention | sweep | kv_cache | batch | prompt | shared | output | "
      "total ms | ms/token | ttft ms | computed/asked | peak MiB | reserved MiB | "
      "same tokens |\n"
      "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (const BenchResult& result : results) {
    const BenchRow& r = result.row;
    absl::PrintF(
        "| %s | %s | %s | %s | %d | %d | %d | %d | %.1f | %.2f | %.1f | %d/%d | %.1f | "
        "%.1f | %s |\n",
        r.model, r.attention, r.sweep, r.kv_cache, r.batch, r.prompt_len, r.shared_len,
        r.output_len, r.total_ms, r.ms_per_output_token, r.ttft_ms, r.prompt_tokens_computed,
        r.prompt_tokens, r.peak_mem_bytes / 1048576.0, r.reserved_mem_bytes / 1048576.0,
        SameTokensText(result.same_tokens));
  }
  std::fflush(stdout);
}

// Pairs each measured point with the measured point before it when both have
// one shape (SameShape; ExpandPoints puts the compared modes side by side).
class SameTokensCheck {
 public:
  // Whether `outputs` equal the tokens of the point before `point` if that
  // one had its shape; notes `point` and `outputs` for the next call.
  std::optional<bool> Check(const BenchPoint& point, std::vector<std::vector<int>> outputs) {
    std::optional<bool> same;
    if (last_.has_value() && SameShape(*last_, point)) same = outputs == last_outputs_;
    last_ = point;
    last_outputs_ = std::move(outputs);
    return same;
  }

 private:
  std::optional<BenchPoint> last_;
  std::vector<std::vector<int>> last_outputs_;
};

}  // namespace

absl::StatusOr<std::vector<BenchResult>> RunBench(const BenchOptions& options) {
  if (absl::Status s = ValidateBenchSpec(options.spec); !s.ok()) return s;
  if (options.repeats < 1) return absl::InvalidArgumentError("--repeats must be >= 1");
  if (options.warmup < 0) return absl::InvalidArgumentError("--warmup must be >= 0");
  if (options.csv_path.empty())
    return absl::InvalidArgumentError("--out (the CSV path) is required");
  auto device = ParseDevice(options.device);
  if (!device.ok()) return device.status();
  auto dtype = ParseDtype(options.dtype);
  if (!dtype.ok()) return dtype.status();
  for (AttentionKind a : options.spec.attentions) {
    if (a == AttentionKind::kFused && !FusedAttentionAvailable()) {
      return absl::InvalidArgumentError(
          "--attention fused needs LibTorch 2.x (scaled_dot_product_attention)");
    }
  }
  auto csv = CsvWriter::Open(options.csv_path);
  if (!csv.ok()) return csv.status();

  const std::vector<BenchPoint> points = ExpandPoints(options.spec);
  double total_cost = 0;
  for (const BenchPoint& p : points) total_cost += EstimatedCost(p) * options.repeats;
  ProgressBar progress(stderr, options.progress && isatty(STDERR_FILENO), points.size(),
                       total_cost);
  const std::string card = options.card.empty() ? CardName(*device) : options.card;
  std::fprintf(stderr, "bench: %zu points on %s (%s), %lld timed repeats after %lld warm-up\n",
               points.size(), card.c_str(), options.dtype.c_str(),
               static_cast<long long>(options.repeats), static_cast<long long>(options.warmup));

  std::vector<BenchResult> results;
  SameTokensCheck same_tokens;
  int64_t failed = 0, skipped = 0, differing = 0;
  size_t next = 0;
  while (next < points.size()) {
    const std::string model_spec = points[next].model;
    auto resolved = ResolveCheckpoint(model_spec, options.seed);
    if (!resolved.ok()) return resolved.status();
    std::fprintf(stderr, "bench: model %s\n", resolved->description.c_str());
    const Gpt2Config config = resolved->checkpoint.config;
    while (next < points.size() && points[next].model == model_spec) {
      const AttentionKind attention = points[next].attention;
      ModelOptions model_options;
      model_options.device = *device;
      model_options.dtype = *dtype;
      model_options.attention = attention;
      std::unique_ptr<Gpt2Model> model;
      {
        auto created = Gpt2Model::Create(resolved->checkpoint, model_options);
        if (!created.ok()) return created.status();
        model = *std::move(created);
      }
      if (absl::Status s = WarmUpModel(*model, options); !s.ok()) return s;
      for (; next < points.size() && points[next].model == model_spec &&
             points[next].attention == attention;
           ++next) {
        const BenchPoint& point = points[next];
        const double cost = EstimatedCost(point) * options.repeats;
        const std::string label =
            absl::StrCat(model_spec, " ", AttentionKindName(attention), " ", point.Label());
        if (options.max_seconds > 0 && progress.ElapsedSeconds() > options.max_seconds) {
          ++skipped;
          progress.Finish(cost, "skipped (--max-seconds): " + label);
          continue;
        }
        if (!FitsContext(point, config.n_positions)) {
          ++skipped;
          progress.Finish(cost, absl::StrCat("skipped (over the context of ", config.n_positions,
                                             "): ", label));
          continue;
        }
        progress.Start(label);
        auto measured = MeasurePoint(*model, point, options);
        if (!measured.ok()) {
          ++failed;
          progress.Finish(cost, absl::StrCat("FAILED ", label, ": ", measured.status().message()));
          continue;
        }
        BenchResult result{measured->row, same_tokens.Check(point, std::move(measured->outputs))};
        BenchRow& row = result.row;
        row.card = card;
        row.device = device->is_cuda() ? "cuda" : "cpu";
        row.model = model_spec;
        row.params_m = config.num_parameters() / 1e6;
        row.dtype = DtypeName(*dtype);
        row.weights_bytes = model->weight_bytes();
        if (absl::Status s = csv->Write(row); !s.ok()) return s;
        if (result.same_tokens == false) ++differing;
        results.push_back(result);
        progress.Finish(cost,
                        absl::StrCat(model_spec, " ", row.attention, " ", ResultLine(result)));
      }
    }
  }
  progress.Close();
  PrintTable(results);
  std::fprintf(stderr,
               "bench: %zu points written to %s, %lld skipped, %lld failed, %lld with other "
               "tokens than their compared mode, %s\n",
               results.size(), options.csv_path.c_str(), static_cast<long long>(skipped),
               static_cast<long long>(failed), static_cast<long long>(differing),
               FormatDuration(progress.ElapsedSeconds()).c_str());
  return results;
}

}  // namespace nanoserve
