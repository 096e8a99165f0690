// `nanoserve tokenize --text T` and `nanoserve detokenize --ids 1,2,3`.
#include <string>

#include "absl/flags/flag.h"
#include "cli/command_table.h"
#include "cli/commands.h"

ABSL_FLAG(std::string, text, "", "tokenize: the text");
ABSL_FLAG(std::string, ids, "", "detokenize: comma-separated token ids");

namespace nanoserve {

int TokenizeMain(const CommandContext&) { return RunTokenize(absl::GetFlag(FLAGS_text)); }

int DetokenizeMain(const CommandContext&) { return RunDetokenize(absl::GetFlag(FLAGS_ids)); }

}  // namespace nanoserve
