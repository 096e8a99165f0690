// What a benchmark run measures: the sweeps of the seed's Parts A-C as a
// list of points, the prompts of each point, and helpers to parse the
// command line's lists ("8,16,32", "8..1024*2", "0..900+300").
//
// Part A and B (sweep "prompt" and "output"): one prompt, KV cache off and
// on, the prompt or the output length varied with the other fixed. Part C
// (sweep "prefix"): a batch of prompts that share their first shared_len
// tokens, KV cache on without reuse against prefix reuse.
//
// Thread-compatible: plain functions and value types.
#ifndef NANOSERVE_BENCH_SWEEP_H_
#define NANOSERVE_BENCH_SWEEP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/attention.h"
#include "engine/generate.h"

namespace nanoserve {

enum class SweepKind { kPrompt, kOutput, kPrefix };

// "prompt", "output" or "prefix"; INVALID_ARGUMENT otherwise.
absl::StatusOr<SweepKind> ParseSweepKind(absl::string_view name);
std::string SweepKindName(SweepKind kind);

// A list of non-negative integers, comma separated; each item is a number or
// a range: "a..b*f" (a, a*f, a*f*f, ... while <= b, then b itself if it was
// not reached; f >= 2, a >= 1) or "a..b+s" (a, a+s, ... while <= b, then b).
// "8..1000*2" = 8,16,...,512,1000. Duplicates are dropped, order is kept.
// INVALID_ARGUMENT for an empty list, a malformed item, b < a, or a range of
// more than 10000 items.
absl::StatusOr<std::vector<int64_t>> ParseIntList(absl::string_view spec);

// Comma-separated non-empty names, whitespace trimmed; INVALID_ARGUMENT for
// an empty list or an empty item.
absl::StatusOr<std::vector<std::string>> ParseNameList(absl::string_view spec);

// ParseNameList, each name turned into a value by `parse` (a function
// string_view -> StatusOr<T>, e.g. ParseAttentionKind); its first error.
template <typename T, typename Parse>
absl::StatusOr<std::vector<T>> ParseKindList(absl::string_view spec, Parse parse) {
  absl::StatusOr<std::vector<std::string>> names = ParseNameList(spec);
  if (!names.ok()) return names.status();
  std::vector<T> kinds;
  for (const std::string& name : *names) {
    absl::StatusOr<T> kind = parse(name);
    if (!kind.ok()) return kind.status();
    kinds.push_back(*kind);
  }
  return kinds;
}

struct BenchSpec {
  std::vector<std::string> models = {"random:gpt2"};  // --model specs
  std::vector<AttentionKind> attentions = {AttentionKind::kNaive};
  std::vector<SweepKind> sweeps = {SweepKind::kPrompt, SweepKind::kOutput, SweepKind::kPrefix};
  // Sweep "prompt": these prompt lengths, each generating fixed_output tokens.
  std::vector<int64_t> prompt_lens = {8, 16, 32, 64, 128, 256, 512, 1000};
  int64_t fixed_output = 16;
  // Sweep "output": these output lengths after a prompt of fixed_prompt tokens.
  std::vector<int64_t> output_lens = {8, 16, 32, 64, 128, 256, 512, 1000};
  int64_t fixed_prompt = 16;
  // Sweep "prefix": batches of batch_sizes prompts, each shared_len common
  // tokens then suffix_len tokens of its own, generating prefix_output tokens.
  std::vector<int64_t> shared_lens = {0, 128, 256, 512, 900};
  std::vector<int64_t> batch_sizes = {1, 4, 16};
  int64_t suffix_len = 32;
  int64_t prefix_output = 16;
};

// Checks lengths and sizes: every length >= 1 (shared_lens >= 0), batches
// >= 1, at least one model, attention and sweep. INVALID_ARGUMENT naming
// the field otherwise. Context limits are checked per point (FitsContext).
absl::Status ValidateBenchSpec(const BenchSpec& spec);

// One measured configuration.
struct BenchPoint {
  std::string model;
  AttentionKind attention = AttentionKind::kNaive;
  SweepKind sweep = SweepKind::kPrompt;
  KvCacheMode mode = KvCacheMode::kOn;
  int64_t batch = 1;
  int64_t shared_len = 0;  // tokens common to every prompt of the batch
  int64_t prompt_len = 0;  // tokens per prompt, shared ones included
  int64_t output_len = 0;  // tokens generated per prompt

  // "prompt off B=1 P=64 S=0 O=16", for logs.
  std::string Label() const;
};

// The modes a sweep compares: off and on for "prompt" and "output", on and
// prefix for "prefix".
std::vector<KvCacheMode> SweepModes(SweepKind kind);

// True if `a` and `b` differ at most in their KV cache mode: the same model,
// attention, sweep and lengths, so the same prompts (MakePrompts) and, with
// greedy decoding, the same output tokens.
bool SameShape(const BenchPoint& a, const BenchPoint& b);

// Every point of `spec` in run order: model, attention, sweep, then the
// swept value(s) ascending, the compared modes adjacent (so that a run cut
// short still holds both modes of each length it reached).
std::vector<BenchPoint> ExpandPoints(const BenchSpec& spec);

// prompt_len + output_len fits a context of `n_positions` tokens.
bool FitsContext(const BenchPoint& point, int64_t n_positions);

// The point's prompts: `batch` rows of prompt_len token ids in
// [0, vocab_size), the first shared_len equal in every row, the rest
// different in every row from the first token on (row r's first own token is
// distinct from every other row's). Deterministic in (seed, point lengths),
// the same for every mode and attention, so compared modes see one input.
std::vector<std::vector<int>> MakePrompts(const BenchPoint& point, int64_t vocab_size,
                                          uint64_t seed);

// A rough cost of measuring a point once, in token-passes: the tokens that
// run through the model summed over all forward passes (a whole sequence
// every step with the cache off), plus a per-step overhead. Used only for
// the progress bar's estimate of time left.
double EstimatedCost(const BenchPoint& point);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_SWEEP_H_
