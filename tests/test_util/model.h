// Shared set-up of the tests that run a model (engine, bench, services,
// integration): the device and dtype under test (NANOSERVE_TEST_DEVICE=
// cpu|cuda, NANOSERVE_TEST_DTYPE=fp32|bf16|fp16; CPU fp32 by default), tiny
// GPT-2 models, greedy generation options, and greedy comparisons that
// tolerate only genuine near-ties.
#ifndef NANOSERVE_TESTS_TEST_UTIL_MODEL_H_
#define NANOSERVE_TESTS_TEST_UTIL_MODEL_H_

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/types.h>

#include "base/dtype.h"
#include "engine/checkpoint.h"
#include "engine/device.h"
#include "engine/generate.h"
#include "engine/model.h"

namespace nanoserve::testing {

inline torch::Device TestDevice() {
  const char* env = std::getenv("NANOSERVE_TEST_DEVICE");
  return torch::Device(env != nullptr && std::string(env) == "cuda" ? torch::kCUDA : torch::kCPU);
}

inline torch::Dtype TestDtype() {
  const char* env = std::getenv("NANOSERVE_TEST_DTYPE");
  return env == nullptr ? torch::kFloat : ParseDtype(env).value();
}

// Logit tolerance of two paths that should agree: fp32 rounding only, or the
// 8-bit mantissa of bf16/fp16 on logits of magnitude ~10.
inline double LogitTolerance() { return TestDtype() == torch::kFloat ? 2e-3 : 0.3; }

// 2 layers, 4 heads, 64 wide, a vocabulary of 512 and a context of 96.
inline Gpt2Config TinyConfig() {
  Gpt2Config c;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 64;
  c.vocab_size = 512;
  c.n_positions = 96;
  return c;
}

// Random weights scaled up 15x from GPT-2's 0.02 so that logits spread out
// and greedy choices rarely sit on rounding ties.
inline Checkpoint TinyCheckpoint(const Gpt2Config& config = TinyConfig(), uint64_t seed = 1) {
  Checkpoint ckpt = RandomCheckpoint(config, seed);
  for (auto& [name, tensor] : ckpt.weights) {
    if (name.find("ln_") == std::string::npos) tensor.mul_(15.0);
  }
  return ckpt;
}

inline std::unique_ptr<Gpt2Model> TinyModel(AttentionKind attention = AttentionKind::kNaive,
                                            const Checkpoint& ckpt = TinyCheckpoint()) {
  ModelOptions options;
  options.device = TestDevice();
  options.dtype = TestDtype();
  options.attention = attention;
  return Gpt2Model::Create(ckpt, options).value();
}

// Greedy generation of exactly `max_new` tokens (end of text does not stop
// it) with the KV cache in `mode`.
inline GenerateOptions GreedyOptions(KvCacheMode mode, int64_t max_new) {
  GenerateOptions options;
  options.kv_cache = mode;
  options.max_new_tokens = max_new;
  options.stop_at_end_of_text = false;
  return options;
}

// Logits at every position of `ids` with no cache: (T, V).
inline torch::Tensor FullLogits(const Gpt2Model& model, const std::vector<int>& ids) {
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  auto hidden = model.Forward(torch::tensor(ids64).view({1, n}), torch::arange(n).view({1, n}));
  return model.Logits(hidden)[0].cpu();
}

// Expects `actual` to be the greedy continuation `expected` of `prompt`: the
// same tokens, except that after a step where the reference's best two
// logits are within `tolerance` (a genuine tie under rounding) the sequences
// may part. Returns the number of tokens compared equal.
inline size_t ExpectSameGreedy(const Gpt2Model& model, const std::vector<int>& prompt,
                               const std::vector<int>& expected, const std::vector<int>& actual,
                               double tolerance = LogitTolerance()) {
  std::vector<int> full = prompt;
  full.insert(full.end(), expected.begin(), expected.end());
  torch::Tensor logits = FullLogits(model, full);
  for (size_t i = 0; i < expected.size(); ++i) {
    if (i >= actual.size()) {
      ADD_FAILURE() << "output ended after " << i << " of " << expected.size() << " tokens";
      return i;
    }
    if (actual[i] == expected[i]) continue;
    auto top2 = std::get<0>(logits[prompt.size() - 1 + i].topk(2));
    const double margin = (top2[0] - top2[1]).item<double>();
    EXPECT_LT(margin, tolerance) << "token " << i << " differs (" << actual[i] << " vs "
                                 << expected[i] << ") with a clear margin " << margin;
    return i;
  }
  EXPECT_EQ(actual.size(), expected.size());
  return expected.size();
}

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_TEST_UTIL_MODEL_H_
