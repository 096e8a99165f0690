// `nanoserve bench` (the Parts A-C experiments; see bench/runner.h) and
// `nanoserve export-hf` (writes a model's weights as an HF checkpoint for the
// peer, bench/hf_peer.py). Flags live in cli/bench_main.cc and
// cli/export_hf_main.cc; lists arrive as strings.
#ifndef NANOSERVE_CLI_BENCH_COMMAND_H_
#define NANOSERVE_CLI_BENCH_COMMAND_H_

#include <cstdint>
#include <string>

#include "bench/runner.h"

namespace nanoserve {

struct BenchCommandOptions {
  std::string models = "random:gpt2";  // --model: comma list of specs
  std::string attentions = "naive";    // --attention: comma list
  std::string sweeps = "prompt,output,prefix";
  std::string prompt_lens = "8..1000*2";
  std::string output_lens = "8..1000*2";
  std::string shared_lens = "0,128,256,512,900";
  std::string batch_sizes = "1,4,16";
  int64_t fixed_output = 16;
  int64_t fixed_prompt = 16;
  int64_t suffix_len = 32;
  int64_t prefix_output = 16;
  BenchOptions bench;  // device, dtype, seed, repeats, warmup, page size, out, limits
};

int RunBenchCommand(const BenchCommandOptions& options);

// Writes `model` (a --model spec; random weights from `seed`) to `dir` as
// HF's config.json + model.safetensors ("transformer." names).
int RunExportHf(const std::string& model, uint64_t seed, const std::string& dir);

}  // namespace nanoserve

#endif  // NANOSERVE_CLI_BENCH_COMMAND_H_
