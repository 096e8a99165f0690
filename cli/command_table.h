// The `nanoserve` command line as a table of commands: each has a name, one
// line of help and a function that reads its flags, runs it and returns the
// process's exit code. main() (cli/main.cc) parses the flags, loads the
// TLS credentials every command may use and runs the command named by the
// first argument.
//
// Each command's function lives in its own file, cli/<command>_main.cc, with
// the flags only it reads; flags that several commands read are in
// cli/cli_flags.h. The commands' work is in the libraries below (client/,
// bench/, engine/).
#ifndef NANOSERVE_CLI_COMMAND_TABLE_H_
#define NANOSERVE_CLI_COMMAND_TABLE_H_

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace nanoserve {

// What main() hands every command.
struct CommandContext {
  // The channel credentials of --tls_cert, --tls_key, --tls_ca (base/tls.h);
  // null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

struct Command {
  const char* name;  // the first argument, e.g. "bench-decode"
  const char* help;  // one line for --help
  int (*run)(const CommandContext& context);
};

// Every command, in the order --help lists them.
absl::Span<const Command> Commands();

// A command that cannot go on: prints "nanoserve: <the status's message>" to
// stderr and returns the exit code 1.
int Fail(const absl::Status& status);

// The command called `name`, or null.
const Command* FindCommand(absl::string_view name);

// --help's text: how to call nanoserve and one line per command.
std::string CommandsUsage();

// The commands' functions, each in cli/<command>_main.cc.
int TokenizeMain(const CommandContext& context);
int DetokenizeMain(const CommandContext& context);
int GenerateMain(const CommandContext& context);
int BenchMain(const CommandContext& context);
int ExportHfMain(const CommandContext& context);
int StatsMain(const CommandContext& context);
int HealthMain(const CommandContext& context);
int ServeMain(const CommandContext& context);
int BenchServicesMain(const CommandContext& context);
int BenchDecodeMain(const CommandContext& context);
int LoadMain(const CommandContext& context);

}  // namespace nanoserve

#endif  // NANOSERVE_CLI_COMMAND_TABLE_H_
