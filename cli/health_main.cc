// `nanoserve health --target H:P`: exits 0 once the service answers
// SERVING within --timeout_s, else 1 (for probes).
#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "base/server_runner.h"
#include "cli/cli_flags.h"
#include "cli/command_table.h"

namespace nanoserve {

int HealthMain(const CommandContext& context) {
  const absl::Status serving =
      WaitForServing(absl::GetFlag(FLAGS_target), absl::Seconds(absl::GetFlag(FLAGS_timeout_s)),
                     context.credentials);
  return serving.ok() ? 0 : CommandError(serving, 1);
}

}  // namespace nanoserve
