// `nanoserve generate`: in this process, or with --target from a running
// decode service. Its flags (the prompt, sampling, the KV cache, ...) are
// those of GenerateCommandOptions (cli/commands.h), which `serve` and
// `bench-services` read too.
#ifndef NANOSERVE_CLI_GENERATE_MAIN_H_
#define NANOSERVE_CLI_GENERATE_MAIN_H_

#include "absl/status/statusor.h"
#include "cli/commands.h"

namespace nanoserve {

// GenerateCommandOptions from the flags. INVALID_ARGUMENT for a
// --decode_step that is not one of the choices.
absl::StatusOr<GenerateCommandOptions> GenerateCommandOptionsFromFlags();

}  // namespace nanoserve

#endif  // NANOSERVE_CLI_GENERATE_MAIN_H_
