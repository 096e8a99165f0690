// `nanoserve bench`: the Parts A-C sweeps (client/bench_command.h). --model
// and --attention take comma lists here; ranges: a..b*factor, a..b+step.
#include <string>

#include "absl/flags/flag.h"
#include "cli/bench_command.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"
#include "engine/decode_step.h"

ABSL_FLAG(std::string, sweeps, "prompt,output,prefix", "bench: sweeps to run");
ABSL_FLAG(std::string, prompt_lens, "8..1000*2", "bench: prompt lengths of the prompt sweep");
ABSL_FLAG(std::string, output_lens, "8..1000*2", "bench: output lengths of the output sweep");
ABSL_FLAG(int64_t, fixed_output, 16, "bench: output length of the prompt sweep");
ABSL_FLAG(int64_t, fixed_prompt, 16, "bench: prompt length of the output sweep");
ABSL_FLAG(std::string, shared_lens, "0,128,256,512,900",
          "bench: shared prefix lengths (prefix sweep)");
ABSL_FLAG(std::string, batch_sizes, "1,4,16", "bench: batch sizes (prefix sweep)");
ABSL_FLAG(int64_t, suffix_len, 32, "bench: tokens of each prompt after the shared prefix");
ABSL_FLAG(int64_t, prefix_output, 16, "bench: output length of the prefix sweep");
ABSL_FLAG(int64_t, warmup, 1, "bench: untimed short runs (<= 4 output tokens) per point first");
ABSL_FLAG(double, max_seconds, 0, "bench: skip points not started within this time (0 = no limit)");
ABSL_FLAG(bool, progress, true, "bench: progress bar on stderr");

namespace nanoserve {

int BenchMain(const CommandContext&) {
  BenchCommandOptions o;
  o.models = ModelFlagOrDefault();
  o.attentions = absl::GetFlag(FLAGS_attention);
  o.sweeps = absl::GetFlag(FLAGS_sweeps);
  o.prompt_lens = absl::GetFlag(FLAGS_prompt_lens);
  o.output_lens = absl::GetFlag(FLAGS_output_lens);
  o.shared_lens = absl::GetFlag(FLAGS_shared_lens);
  o.batch_sizes = absl::GetFlag(FLAGS_batch_sizes);
  o.fixed_output = absl::GetFlag(FLAGS_fixed_output);
  o.fixed_prompt = absl::GetFlag(FLAGS_fixed_prompt);
  o.suffix_len = absl::GetFlag(FLAGS_suffix_len);
  o.prefix_output = absl::GetFlag(FLAGS_prefix_output);
  o.bench.device = absl::GetFlag(FLAGS_device);
  o.bench.dtype = absl::GetFlag(FLAGS_dtype);
  o.bench.seed = absl::GetFlag(FLAGS_seed);
  o.bench.repeats = absl::GetFlag(FLAGS_repeats);
  o.bench.warmup = absl::GetFlag(FLAGS_warmup);
  o.bench.page_size = absl::GetFlag(FLAGS_page_size);
  o.bench.csv_path = absl::GetFlag(FLAGS_out);
  o.bench.max_seconds = absl::GetFlag(FLAGS_max_seconds);
  o.bench.progress = absl::GetFlag(FLAGS_progress);
  o.bench.card = absl::GetFlag(FLAGS_card);
  absl::StatusOr<DecodeKind> decode = ParseDecodeKind(absl::GetFlag(FLAGS_decode_step));
  if (!decode.ok()) return Fail(decode.status());
  o.bench.decode = *decode;
  return RunBenchCommand(o);
}

}  // namespace nanoserve
