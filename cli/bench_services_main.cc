// `nanoserve bench-services`: the offline engine against the three services
// (bench/services_bench.h), or with --front_door decode's gRPC against its
// OpenAI HTTP API (bench/front_door_bench.h).
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/front_door_bench.h"
#include "bench/services_bench.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"
#include "cli/generate_main.h"
#include "cli/serve_main.h"

ABSL_FLAG(std::string, prompt_lengths, "16,128,512", "bench-services: prompt lengths in tokens");
ABSL_FLAG(bool, front_door, false,
          "bench-services: decode's gRPC against its OpenAI HTTP API (client TTFT, ms/token)");

namespace nanoserve {

int BenchServicesMain(const CommandContext&) {
  absl::StatusOr<GenerateCommandOptions> o = GenerateCommandOptionsFromFlags();
  if (!o.ok()) return CommandError(o.status(), 2);
  BenchServicesOptions bench;
  bench.stack = ServiceStackOptionsFromFlags(*o);
  bench.max_new_tokens = o->generate.max_new_tokens;
  bench.repeats = absl::GetFlag(FLAGS_repeats);
  bench.prompt_lengths.clear();
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_prompt_lengths), ',')) {
    int64_t n = 0;
    if (absl::SimpleAtoi(part, &n) && n > 0) bench.prompt_lengths.push_back(n);
  }
  if (absl::GetFlag(FLAGS_front_door)) return RunBenchFrontDoor(bench);
  return RunBenchServices(bench);
}

}  // namespace nanoserve
