// `nanoserve bench-decode`: the decode step of the offline engine, the
// reference LibTorch path against the CUDA-graph path, at a few batch sizes.
// For each attention kind, batch size and decode kind it runs batch prompts
// of prompt_len tokens generating output_len tokens each (greedy, end of
// text ignored): first a pass in a fresh Generator (its first call in this
// process for this configuration: graph captures and cold shapes included),
// then `repeats` warm passes, and prints per row the decode step (ms), the
// output tokens per second, TTFT, and whether the greedy tokens equal the
// reference path's. Also writes the rows as CSV.
//
// Thread-compatible: one call at a time.
#ifndef NANOSERVE_BENCH_DECODE_BENCH_H_
#define NANOSERVE_BENCH_DECODE_BENCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/attention.h"
#include "engine/decode_step.h"

namespace nanoserve {

struct BenchDecodeOptions {
  std::string model = "random:gpt2";  // a --model spec
  std::string device = "cuda";
  std::string dtype = "bf16";
  uint64_t seed = 0;  // random weights and prompts
  std::vector<AttentionKind> attentions = {AttentionKind::kNaive};
  // The decode kinds compared; kReference first (the tokens' baseline).
  std::vector<DecodeKind> decodes = {DecodeKind::kReference, DecodeKind::kCudaGraph};
  std::vector<int64_t> batch_sizes = {1, 8, 64};
  int64_t prompt_len = 128;
  int64_t output_len = 128;
  int64_t repeats = 3;   // warm passes; the median is printed
  std::string csv_path;  // empty: no CSV
  std::string card;      // the machine's name for the CSV; empty: found from /proc
  // Also print where a cuda-graph step's time goes at each batch size, the
  // rows at prompt_len + output_len / 2 tokens (engine/cuda/decode_profile.h;
  // CUDA builds).
  bool profile = false;
};

// Fills options' attentions, decodes and batch_sizes from comma lists
// ("naive,fused", "reference,cuda-graph" where "auto" means both on CUDA
// and reference on the CPU, "1,8,64"). INVALID_ARGUMENT naming a bad item.
absl::Status ParseBenchDecodeLists(absl::string_view attentions, absl::string_view decodes,
                                   absl::string_view batches, BenchDecodeOptions& options);

// Runs the table and prints it (Markdown) on stdout. Returns the process
// exit code: 0, or 1 after one line on stderr when the model cannot be
// loaded, a decode kind cannot run here, or a pass fails.
int RunBenchDecode(const BenchDecodeOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_DECODE_BENCH_H_
