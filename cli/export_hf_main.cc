// `nanoserve export-hf --model M --out D`: M's weights as an HF checkpoint
// (client/bench_command.h), for the peer bench/hf_peer.py.
#include "absl/flags/flag.h"
#include "cli/bench_command.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"

namespace nanoserve {

int ExportHfMain(const CommandContext&) {
  return RunExportHf(ModelFlagOrDefault(), absl::GetFlag(FLAGS_seed), absl::GetFlag(FLAGS_out));
}

}  // namespace nanoserve
