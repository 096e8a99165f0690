#include "cli/generate_main.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"
#include "cli/remote_commands.h"
#include "engine/decode_step.h"

ABSL_FLAG(std::string, prompt, "", "the prompt text");
ABSL_FLAG(std::string, prompt_file, "", "read the prompt from this file");
ABSL_FLAG(int64_t, max_new_tokens, 32, "tokens to generate per prompt");
ABSL_FLAG(std::string, kv_cache, "on", "off (Part A), on (Part B) or prefix (Part C)");
ABSL_FLAG(double, temperature, 0.0, "0 = greedy");
ABSL_FLAG(int64_t, top_k, 0, "keep the k most likely tokens (0 = all)");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling threshold in (0, 1]");
ABSL_FLAG(int64_t, prefill_chunk, 0, "prefill at most this many tokens per pass (0 = all)");
ABSL_FLAG(int64_t, prefix_cache_mb, 512, "prefix cache pool budget in MiB");
ABSL_FLAG(int64_t, repeat, 1, "run the batch this many times in one process");
ABSL_FLAG(bool, cold_prefix_cache, false,
          "empty the prefix cache before each --repeat run (time a cold batch each time)");
ABSL_FLAG(bool, ignore_eos, false, "keep generating after <|endoftext|>");
ABSL_FLAG(bool, json, false, "print one JSON object instead of streaming text");

namespace nanoserve {

absl::StatusOr<GenerateCommandOptions> GenerateCommandOptionsFromFlags() {
  GenerateCommandOptions o;
  o.model = ModelFlagOrDefault();
  o.prompt = absl::GetFlag(FLAGS_prompt);
  o.prompt_file = absl::GetFlag(FLAGS_prompt_file);
  o.prompts_file = absl::GetFlag(FLAGS_prompts_file);
  o.device = absl::GetFlag(FLAGS_device);
  o.dtype = absl::GetFlag(FLAGS_dtype);
  o.attention = absl::GetFlag(FLAGS_attention);
  o.kv_cache = absl::GetFlag(FLAGS_kv_cache);
  o.page_size = absl::GetFlag(FLAGS_page_size);
  o.prefix_cache_mb = absl::GetFlag(FLAGS_prefix_cache_mb);
  o.repeat = absl::GetFlag(FLAGS_repeat);
  o.cold_prefix_cache = absl::GetFlag(FLAGS_cold_prefix_cache);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.json = absl::GetFlag(FLAGS_json);
  o.cache_salt = absl::GetFlag(FLAGS_cache_salt);
  o.generate.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  o.generate.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  o.generate.stop_at_end_of_text = !absl::GetFlag(FLAGS_ignore_eos);
  o.generate.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  o.generate.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  o.generate.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  o.generate.sampling.seed = absl::GetFlag(FLAGS_seed);
  absl::StatusOr<DecodeKind> decode = ParseDecodeKind(absl::GetFlag(FLAGS_decode_step));
  if (!decode.ok()) return decode.status();
  o.generate.decode = *decode;
  return o;
}

int GenerateMain(const CommandContext& context) {
  absl::StatusOr<GenerateCommandOptions> o = GenerateCommandOptionsFromFlags();
  if (!o.ok()) return CommandError(o.status(), 2);
  const std::string target = absl::GetFlag(FLAGS_target);
  if (target.empty()) return RunGenerate(*o);
  return RunRemoteGenerate(*o, target, absl::Seconds(absl::GetFlag(FLAGS_timeout_s)),
                           context.credentials);
}

}  // namespace nanoserve
