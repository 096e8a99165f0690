// A DecodeStage over the tiny model whose calls a GatedPrefiller holds in
// flight, with admission shared between callers: 300 tokens of work in
// all, 100 per caller (a call of 3 prompt + 60 new tokens is 63). What the
// fair-share tests of the stage and of the gRPC service both start from.
#ifndef NANOSERVE_TESTS_TEST_UTIL_SHARED_DECODE_STAGE_H_
#define NANOSERVE_TESTS_TEST_UTIL_SHARED_DECODE_STAGE_H_

#include <memory>
#include <string>

#include "base/metrics.h"
#include "base/worker_pool.h"
#include "decode_service/decode_stage.h"
#include "engine/batch_scheduler.h"
#include "engine/tokenizer.h"
#include "tests/test_util/gated_prefiller.h"
#include "tests/test_util/metrics.h"
#include "tests/test_util/model.h"

namespace nanoserve::testing {

struct SharedDecodeStage {
  SharedDecodeStage() {
    DecodeStageOptions options;
    options.max_tokens_in_flight = 300;
    options.max_tokens_in_flight_per_caller = 100;
    stage = std::make_unique<DecodeStage>(tokenizer.get(), scheduler.get(), &prefill, nullptr,
                                          &workers, options, &metrics);
  }
  // Opens the gate, so that held calls end (decode computes their prompts).
  ~SharedDecodeStage() { prefill.Open(); }

  double Metric(const std::string& name) { return MetricValue(metrics.Render(), name); }

  std::unique_ptr<Gpt2Model> model = TinyModel();
  std::unique_ptr<Gpt2Tokenizer> tokenizer = Gpt2Tokenizer::LoadDefault().value();
  std::unique_ptr<BatchScheduler> scheduler =
      BatchScheduler::Create(model.get(), BatchSchedulerOptions{}).value();
  WorkerPool workers{8};
  GatedPrefiller prefill;
  MetricsRegistry metrics;
  std::unique_ptr<DecodeStage> stage;
};

}  // namespace nanoserve::testing

#endif  // NANOSERVE_TESTS_TEST_UTIL_SHARED_DECODE_STAGE_H_
