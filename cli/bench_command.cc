#include "cli/bench_command.h"

#include <cstdio>

#include "absl/status/statusor.h"
#include "cli/command_table.h"
#include "engine/checkpoint.h"
#include "engine/model_loader.h"

namespace nanoserve {
namespace {

// Fills spec's lists from the command line's strings.
absl::Status ParseSpec(const BenchCommandOptions& o, BenchSpec& spec) {
  auto models = ParseNameList(o.models);
  if (!models.ok()) return models.status();
  spec.models = *models;
  auto attentions = ParseKindList<AttentionKind>(o.attentions, ParseAttentionKind);
  if (!attentions.ok()) return attentions.status();
  spec.attentions = *attentions;
  auto sweeps = ParseKindList<SweepKind>(o.sweeps, ParseSweepKind);
  if (!sweeps.ok()) return sweeps.status();
  spec.sweeps = *sweeps;
  struct {
    const std::string& text;
    std::vector<int64_t>& into;
  } lists[] = {{o.prompt_lens, spec.prompt_lens},
               {o.output_lens, spec.output_lens},
               {o.shared_lens, spec.shared_lens},
               {o.batch_sizes, spec.batch_sizes}};
  for (auto& list : lists) {
    auto values = ParseIntList(list.text);
    if (!values.ok()) return values.status();
    list.into = *values;
  }
  spec.fixed_output = o.fixed_output;
  spec.fixed_prompt = o.fixed_prompt;
  spec.suffix_len = o.suffix_len;
  spec.prefix_output = o.prefix_output;
  return ValidateBenchSpec(spec);
}

}  // namespace

int RunBenchCommand(const BenchCommandOptions& o) {
  BenchOptions options = o.bench;
  if (absl::Status s = ParseSpec(o, options.spec); !s.ok()) return Fail(s);
  auto results = RunBench(options);
  if (!results.ok()) return Fail(results.status());
  return 0;
}

int RunExportHf(const std::string& model, uint64_t seed, const std::string& dir) {
  if (dir.empty()) return Fail(absl::InvalidArgumentError("export-hf needs --out DIR"));
  auto resolved = ResolveCheckpoint(model, seed);
  if (!resolved.ok()) return Fail(resolved.status());
  if (absl::Status s = SaveCheckpoint(dir, resolved->checkpoint); !s.ok()) return Fail(s);
  std::fprintf(stderr, "nanoserve: wrote %s to %s (HF GPT-2 checkpoint)\n",
               resolved->description.c_str(), dir.c_str());
  return 0;
}

}  // namespace nanoserve
