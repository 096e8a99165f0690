// The flags several `nanoserve` commands read, defined once in cli_flags.cc;
// a flag only one command reads is defined in that command's file
// (cli/<command>_main.cc). Every flag may be spelled with dashes
// (cli/flag_names.h).
#ifndef NANOSERVE_CLI_CLI_FLAGS_H_
#define NANOSERVE_CLI_CLI_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "cli/command_table.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, prompts_file);
ABSL_DECLARE_FLAG(std::string, attention);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(std::string, dtype);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(int64_t, page_size);
ABSL_DECLARE_FLAG(std::string, decode_step);
ABSL_DECLARE_FLAG(int64_t, repeats);
ABSL_DECLARE_FLAG(std::string, card);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(std::string, target);
ABSL_DECLARE_FLAG(std::string, cache_salt);
ABSL_DECLARE_FLAG(int64_t, timeout_s);

namespace nanoserve {

// --model, or DefaultModelSpec() when it is empty.
std::string ModelFlagOrDefault();

// What every command gets: the channel credentials of --tls_cert,
// --tls_key, --tls_ca. Errors: those of LoadTransportCredentials (a file
// missing or unreadable, only some of the three given).
absl::StatusOr<CommandContext> CommandContextFromFlags();

// Prints "nanoserve: <status>" on stderr and returns `exit_code`.
int CommandError(const absl::Status& status, int exit_code);

}  // namespace nanoserve

#endif  // NANOSERVE_CLI_CLI_FLAGS_H_
