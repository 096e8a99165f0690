// Runs a BenchSpec on the engine: for each model (its weights made or read
// once) and attention kind, each point of ExpandPoints is warmed up, then
// timed `repeats` times; the median of each measure goes to one CSV row.
//
// Every run generates exactly output_len tokens per prompt (end of text does
// not stop it), from seeded random prompts of exact lengths, greedy. Memory:
// cached-but-free memory is given back before each point's warm-up
// (ReleaseCachedMemory), and Generate measures the peak of each run.
// Prefix-mode repeats each start from an empty prefix cache, so reuse is
// within the batch only (Part C: one batch sharing a system prompt). The
// greedy tokens of each point are checked against those of the mode it is
// compared with (SameShape): the caches must not change what is generated.
#ifndef NANOSERVE_BENCH_RUNNER_H_
#define NANOSERVE_BENCH_RUNNER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/results.h"
#include "bench/sweep.h"
#include "engine/decode_step.h"

#include <torch/types.h>

namespace nanoserve {

struct BenchOptions {
  BenchSpec spec;
  std::string device = "cpu";  // cpu or cuda[:N]
  std::string dtype = "fp32";  // fp32, bf16, fp16
  uint64_t seed = 0;           // random weights and prompts
  int64_t repeats = 3;         // timed runs per point, >= 1
  int64_t warmup = 1;          // untimed short runs (<= 4 tokens) per point first, >= 0
  int64_t page_size = 16;      // prefix cache page, tokens
  std::string csv_path;        // where the rows go; required
  // Points not started within this many seconds of the start are skipped
  // (and counted); 0 = no limit. Keeps a device call within its limit.
  double max_seconds = 0;
  bool progress = true;  // progress bar (or per-point lines) on stderr
  // The machine's name in the CSV's card column; empty: found from /proc
  // (the NVIDIA driver's GPU model, or the CPU's model name and threads).
  std::string card;
  // The Generator's decode step (GenerateOptions::decode): also how its
  // prefill passes run (cuda-graph-eager-prefill keeps them eager).
  DecodeKind decode = DecodeKind::kAuto;
};

// One measured point.
struct BenchResult {
  BenchRow row;  // as written to the CSV
  // Whether the point's greedy tokens (every prompt's, in its last timed run)
  // equal those of the point before it of the same shape (SameShape), the
  // sweep's first mode: off for "prompt" and "output", on for "prefix".
  // Empty for that first mode itself, or when it was not measured.
  std::optional<bool> same_tokens;
};

// Runs every point, writes the CSV as it goes, prints a short table of the
// results to stdout (with the same-tokens check, which the CSV leaves out)
// and returns them in run order. A point that fails (out of memory, say) is
// reported on stderr and left out; the run goes on. Errors: INVALID_ARGUMENT
// for bad options; the CSV's write errors; a model that cannot be loaded.
absl::StatusOr<std::vector<BenchResult>> RunBench(const BenchOptions& options);

// The card's name, from the kernel's files: the GPU's model (device 0's:
// pass BenchOptions::card where that is not the one), or the CPU's model
// name with the threads LibTorch uses.
std::string CardName(const torch::Device& device);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_RUNNER_H_
