// nanoserve-decode: the front door; Generate streams tokens, decoded with continuous batching.
// Its flags are DecodeOptions (options/decode_options.h), read in decode_flags.cc.
#include <cstdio>
#include <memory>
#include <utility>

#include "decode_service/decode_flags.h"
#include "decode_service/decode_handler.h"
#include "decode_service/decode_service.h"
#include "engine/device.h"
#include "engine/prefill.h"
#include "engine/warm_up.h"
#include "kv_store/client/store_client_flags.h"
#include "prefill_service/prefill_client.h"
#include "rpc/service_main.h"

namespace nanoserve {
namespace {

int Run(const DecodeOptions& o) {
  if (absl::Status bad = CheckDecodeOptions(o); !bad.ok()) return ServiceError(bad);
  if (absl::Status too_big = CheckDecodeMemory(o); !too_big.ok()) return ServiceError(too_big);
  auto loaded = LoadServiceModel(o.service.model);
  if (!loaded.ok()) return ServiceError(loaded.status());
  auto tokenizer = Gpt2Tokenizer::LoadDefault();
  if (!tokenizer.ok()) return ServiceError(tokenizer.status());
  std::unique_ptr<v1::Prefill::Stub> prefill = PeerStub<v1::Prefill>(o.prefill, o.service);
  auto remote = ConnectRemoteStore(o.store, o.service);
  if (!remote.ok()) return ServiceError(remote.status());
  RemoteStore store = *std::move(remote);
  PrefillClient prefill_client(prefill.get(), store.store.get(),
                               absl::Milliseconds(o.prefill_timeout_ms),
                               ModelIdentityFor(o.service.model));
  auto scheduler_options = BatchSchedulerOptionsFor(o);
  if (!scheduler_options.ok()) return ServiceError(scheduler_options.status());
  auto created = BatchScheduler::Create(loaded->model.get(), *scheduler_options);
  if (!created.ok()) return ServiceError(created.status());
  BatchScheduler& scheduler = **created;
  if (WorthWarmingUp(scheduler.device())) {  // before it says it is serving
    absl::StatusOr<double> warm = WarmUpScheduler(
        scheduler,
        WarmUpShapes(scheduler.max_batch(), kMaxPrefillBatchTokens / 2, scheduler.capacity()),
        loaded->model->config().vocab_size);
    if (!warm.ok()) return ServiceError(warm.status());
    std::fprintf(stderr, "nanoserve-decode: warmed up in %.0f ms\n", *warm);
    MapStorePoolBeforeServing(store, "nanoserve-decode");
  }
  auto workers = std::make_unique<WorkerPool>(static_cast<int>(o.workers));
  MetricsRegistry metrics;
  DecodeStage stage(tokenizer->get(), &scheduler, prefill != nullptr ? &prefill_client : nullptr,
                    store.store.get(), workers.get(), DecodeStageOptionsFor(o), &metrics);
  DecodeHandler handler(&stage);
  DecodeService service(&handler);
  OpenAiServer openai(&stage, OpenAiServerOptionsFor(o), &metrics);
  const ServerOptions server = DecodeServerOptionsFor(o, &scheduler, &stage, &openai);
  absl::Status served = ServeUntilSignal(server, {&service}, &metrics);
  scheduler.Shutdown();  // end the calls the grace period cancelled,
  workers.reset();       // then let queued lease releases run
  return served.ok() ? 0 : ServiceError(served);
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  nanoserve::KeepFreedHostMemoryForReuse();
  nanoserve::InitService(argc, argv, nanoserve::DecodeOptions::Info());
  return nanoserve::Run(nanoserve::DecodeOptionsFromFlags());
}
