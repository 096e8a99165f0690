// nanoserve-decode: the front door; Generate streams tokens, decoded with continuous batching.
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "decode_service/decode_handler.h"
#include "decode_service/decode_service.h"
#include "engine/device.h"
#include "prefill_service/prefill_client.h"
#include "rpc/service_main.h"
#include "rpc/store_client_flags.h"

ABSL_FLAG(std::string, prefill, "127.0.0.1:50052",
          "prefill service address; empty = compute prompts here");
ABSL_FLAG(int64_t, max_batch, 16, "sequences decoded together (KV cache slots)");
ABSL_FLAG(int64_t, max_context, 0, "tokens per slot, prompt + output (0 = the model's context)");
ABSL_FLAG(int64_t, max_queue, 256, "requests waiting for a slot before RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, prefill_chunk, 0,
          "prompt tokens per pass when decode computes a prompt (0 = all)");
ABSL_FLAG(int64_t, prefill_timeout_ms, 60000, "deadline of the Prefill call");
ABSL_FLAG(int32_t, workers, 8, "threads for the blocking prefill/fetch steps of calls");

namespace nanoserve {
namespace {

int Run() {
  auto loaded = LoadModelFromFlags();
  if (!loaded.ok()) return ServiceError(loaded.status());
  auto tokenizer = Gpt2Tokenizer::LoadDefault();
  if (!tokenizer.ok()) return ServiceError(tokenizer.status());
  std::unique_ptr<v1::Prefill::Stub> prefill = PeerStub<v1::Prefill>(absl::GetFlag(FLAGS_prefill));
  RemoteStore store = RemoteStoreFromFlags();
  PrefillClient prefill_client(prefill.get(), store.store.get(),
                               absl::Milliseconds(absl::GetFlag(FLAGS_prefill_timeout_ms)));
  BatchSchedulerOptions scheduler_options;
  scheduler_options.max_batch = absl::GetFlag(FLAGS_max_batch);
  scheduler_options.capacity = absl::GetFlag(FLAGS_max_context);
  scheduler_options.max_queue = absl::GetFlag(FLAGS_max_queue);
  scheduler_options.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  BatchScheduler scheduler(loaded->model.get(), scheduler_options);
  auto workers = std::make_unique<WorkerPool>(absl::GetFlag(FLAGS_workers));
  MetricsRegistry metrics;
  DecodeStage stage(tokenizer->get(), &scheduler, prefill != nullptr ? &prefill_client : nullptr,
                    store.store.get(), workers.get(), DecodeStageOptions(), &metrics);
  DecodeHandler handler(&stage);
  DecodeService service(&handler);
  absl::Status served = ServeUntilSignal(ServerOptionsFromFlags(), {&service}, &metrics);
  // End the calls the grace period cancelled, then let queued lease releases run.
  scheduler.Shutdown();
  workers.reset();
  return served.ok() ? 0 : ServiceError(served);
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  nanoserve::KeepFreedHostMemoryForReuse();
  nanoserve::InitService(argc, argv, {"nanoserve-decode", "127.0.0.1:50053", "127.0.0.1:9153"});
  return nanoserve::Run();
}
