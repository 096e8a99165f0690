// nanoserve-prefill: the prefill stage.
#include <memory>

#include <utility>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "base/flag_range.h"
#include "engine/device.h"
#include "kv_store/client/store_client_flags.h"
#include "prefill_service/prefill_handler.h"
#include "prefill_service/prefill_service.h"
#include "rpc/service_main.h"

NANOSERVE_FLAG_IN_RANGE(prefill_chunk, 0, 0, 1048576, "prompt tokens per pass (0 = all)");
NANOSERVE_FLAG_IN_RANGE(workers, 64, 1, 1024,
                        "threads serving calls: each call holds one while it waits for its batch, "
                        "so this bounds the calls that can share a batch");
NANOSERVE_FLAG_IN_RANGE(batch_window_ms, 0, 0, 1000,
                        "how long a call reaching an idle prefill waits for others to share its "
                        "batch (0 = only calls arriving while a batch runs share the next)");

namespace nanoserve {
namespace {

int Run() {
  auto loaded = LoadModelFromFlags();
  if (!loaded.ok()) return ServiceError(loaded.status());
  auto remote = RemoteStoreFromFlags();
  if (!remote.ok()) return ServiceError(remote.status());
  RemoteStore store = *std::move(remote);
  MetricsRegistry metrics;
  PrefillStageOptions stage_options;
  stage_options.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  stage_options.batch_window = absl::Milliseconds(absl::GetFlag(FLAGS_batch_window_ms));
  PrefillStage stage(loaded->model.get(), store.store.get(), stage_options, &metrics);
  PrefillHandler handler(&stage);
  WorkerPool workers(static_cast<int>(absl::GetFlag(FLAGS_workers)));
  PrefillService service(&handler, &workers);
  absl::Status served = ServeUntilSignal(ServerOptionsFromFlags(), {&service}, &metrics);
  stage.Shutdown();  // calls still waiting for a batch end now, so the workers can stop
  return served.ok() ? 0 : ServiceError(served);
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  nanoserve::KeepFreedHostMemoryForReuse();
  nanoserve::InitService(argc, argv, {"nanoserve-prefill", "127.0.0.1:50052", "127.0.0.1:9152"});
  return nanoserve::Run();
}
