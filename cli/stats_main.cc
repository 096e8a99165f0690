// `nanoserve stats --target H:P`: a KV store's Stats as JSON.
#include "absl/flags/flag.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"
#include "cli/remote_commands.h"

namespace nanoserve {

int StatsMain(const CommandContext& context) {
  return RunStats(absl::GetFlag(FLAGS_target), context.credentials);
}

}  // namespace nanoserve
