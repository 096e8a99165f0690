// The nanoserve command line's subcommands, as functions of option structs
// (flags live in cli/<command>_main.cc). Each returns the process exit code
// and prints one clear line on error.
#ifndef NANOSERVE_CLI_COMMANDS_H_
#define NANOSERVE_CLI_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "engine/generate.h"

namespace nanoserve {

struct GenerateCommandOptions {
  std::string model;         // --model: dir, .safetensors, random:<preset>
  std::string prompt;        // --prompt
  std::string prompt_file;   // --prompt-file: the whole file is one prompt
  std::string prompts_file;  // --prompts-file: one prompt per line, or a JSON array
  std::string device = "cpu";
  std::string dtype = "fp32";
  std::string attention = "naive";
  std::string kv_cache = "on";
  int64_t page_size = 16;          // prefix cache page size (tokens)
  int64_t prefix_cache_mb = 512;   // prefix cache pool budget
  int64_t repeat = 1;              // run the batch this many times (prefix cache lives on)
  bool cold_prefix_cache = false;  // empty the prefix cache before each run
  GenerateOptions generate;        // max_new_tokens, sampling, chunking
  uint64_t seed = 0;               // random weights' seed
  bool json = false;
  std::string cache_salt;  // generate --target: the request's cache namespace
};

// The prompts of a run: --prompt, --prompt-file (one prompt), or
// --prompts-file (a JSON array of strings, or one prompt per line).
absl::StatusOr<std::vector<std::string>> ReadPrompts(const GenerateCommandOptions& options);

int RunTokenize(const std::string& text);
int RunDetokenize(const std::string& ids);
int RunGenerate(const GenerateCommandOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_CLI_COMMANDS_H_
