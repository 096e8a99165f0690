// nanoserve: the command line, a table of commands (cli/command_table.h):
//   nanoserve <command> [flags]     e.g. generate, serve, bench, load; --help lists them
// Each command reads its flags in its own file, cli/<command>_main.cc.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"
#include "cli/flag_names.h"
#include "engine/device.h"

int main(int argc, char** argv) {
  nanoserve::KeepFreedHostMemoryForReuse();
  absl::SetProgramUsageMessage(nanoserve::CommandsUsage());
  // --help lists the commands' flags (those of cli/), not Abseil's own.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "cli/");
  };
  absl::SetFlagsUsageConfig(usage);
  // --flag-name works as --flag_name.
  std::vector<std::string> spelled = nanoserve::NormalizeFlagNames(argc, argv);
  std::vector<char*> normalized;
  for (std::string& arg : spelled) normalized.push_back(arg.data());
  std::vector<char*> args =
      absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  const std::string name = args.size() > 1 ? args[1] : "";
  absl::StatusOr<nanoserve::CommandContext> context = nanoserve::CommandContextFromFlags();
  if (!context.ok()) return nanoserve::CommandError(context.status(), 2);
  const nanoserve::Command* command = nanoserve::FindCommand(name);
  if (command == nullptr) {
    std::string names;
    for (const nanoserve::Command& c : nanoserve::Commands()) {
      names += names.empty() ? c.name : std::string(", ") + c.name;
    }
    std::fprintf(stderr, "nanoserve: unknown command '%s' (%s)\n", name.c_str(), names.c_str());
    return 2;
  }
  return command->run(*context);
}
