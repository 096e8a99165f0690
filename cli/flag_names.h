// Command-line spelling: absl flags are named with underscores
// (--max_new_tokens); people type dashes (--max-new-tokens). Both work.
#ifndef NANOSERVE_CLI_FLAG_NAMES_H_
#define NANOSERVE_CLI_FLAG_NAMES_H_

#include <string>
#include <vector>

namespace nanoserve {

// argv with every "--flag-name[=value]" rewritten as "--flag_name[=value]".
// Values, positional arguments and everything after a bare "--" are kept.
std::vector<std::string> NormalizeFlagNames(int argc, char** argv);

}  // namespace nanoserve

#endif  // NANOSERVE_CLI_FLAG_NAMES_H_
