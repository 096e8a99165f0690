// `nanoserve bench-decode`: the decode step, reference against CUDA graph,
// at several batch sizes (bench/decode_bench.h).
#include <string>

#include "absl/flags/flag.h"
#include "bench/decode_bench.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"

ABSL_FLAG(std::string, decode_batches, "1,8,64", "bench-decode: batch sizes");
ABSL_FLAG(int64_t, decode_prompt, 128, "bench-decode: prompt tokens per sequence");
ABSL_FLAG(int64_t, decode_output, 128, "bench-decode: new tokens per sequence");
ABSL_FLAG(bool, profile, false, "bench-decode: also where a cuda-graph step's time goes");

namespace nanoserve {

int BenchDecodeMain(const CommandContext&) {
  BenchDecodeOptions o;
  o.model = ModelFlagOrDefault();
  o.device = absl::GetFlag(FLAGS_device);
  o.dtype = absl::GetFlag(FLAGS_dtype);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.repeats = absl::GetFlag(FLAGS_repeats);
  o.prompt_len = absl::GetFlag(FLAGS_decode_prompt);
  o.output_len = absl::GetFlag(FLAGS_decode_output);
  o.csv_path = absl::GetFlag(FLAGS_out);
  o.card = absl::GetFlag(FLAGS_card);
  o.profile = absl::GetFlag(FLAGS_profile);
  absl::Status parsed =
      ParseBenchDecodeLists(absl::GetFlag(FLAGS_attention), absl::GetFlag(FLAGS_decode_step),
                            absl::GetFlag(FLAGS_decode_batches), o);
  if (!parsed.ok()) return CommandError(parsed, 2);
  return RunBenchDecode(o);
}

}  // namespace nanoserve
