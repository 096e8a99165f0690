// nanoserve-prefill: the prefill stage.
#include <memory>

#include "absl/flags/flag.h"
#include "engine/device.h"
#include "prefill_service/prefill_handler.h"
#include "prefill_service/prefill_service.h"
#include "rpc/flag_range.h"
#include "rpc/service_main.h"
#include "rpc/store_client_flags.h"

NANOSERVE_FLAG_IN_RANGE(prefill_chunk, 0, 0, 1048576, "prompt tokens per pass (0 = all)");
NANOSERVE_FLAG_IN_RANGE(workers, 4, 1, 1024, "threads serving calls (batches run one at a time)");

namespace nanoserve {
namespace {

int Run() {
  auto loaded = LoadModelFromFlags();
  if (!loaded.ok()) return ServiceError(loaded.status());
  RemoteStore store = RemoteStoreFromFlags();
  MetricsRegistry metrics;
  PrefillStageOptions stage_options;
  stage_options.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  PrefillStage stage(loaded->model.get(), store.store.get(), stage_options, &metrics);
  PrefillHandler handler(&stage);
  WorkerPool workers(static_cast<int>(absl::GetFlag(FLAGS_workers)));
  PrefillService service(&handler, &workers);
  absl::Status served = ServeUntilSignal(ServerOptionsFromFlags(), {&service}, &metrics);
  return served.ok() ? 0 : ServiceError(served);
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  nanoserve::KeepFreedHostMemoryForReuse();
  nanoserve::InitService(argc, argv, {"nanoserve-prefill", "127.0.0.1:50052", "127.0.0.1:9152"});
  return nanoserve::Run();
}
