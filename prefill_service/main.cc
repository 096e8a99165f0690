// nanoserve-prefill: the prefill stage. Its flags are PrefillOptions
// (options/prefill_options.h), read in prefill_flags.cc.
#include <cstdio>
#include <utility>

#include "engine/device.h"
#include "engine/warm_up.h"
#include "kv_store/client/store_client_flags.h"
#include "prefill_service/prefill_flags.h"
#include "prefill_service/prefill_handler.h"
#include "prefill_service/prefill_service.h"
#include "rpc/service_main.h"

namespace nanoserve {
namespace {

int Run(const PrefillOptions& o) {
  auto loaded = LoadServiceModel(o.service.model);
  if (!loaded.ok()) return ServiceError(loaded.status());
  auto remote = ConnectRemoteStore(o.store, o.service);
  if (!remote.ok()) return ServiceError(remote.status());
  RemoteStore store = *std::move(remote);
  MetricsRegistry metrics;
  PrefillStage stage(loaded->model.get(), store.store.get(), PrefillStageOptionsFor(o), &metrics);
  if (WorthWarmingUp(loaded->model->options().device)) {  // before it says it is serving
    absl::StatusOr<double> warm = stage.WarmUp();
    if (!warm.ok()) return ServiceError(warm.status());
    std::fprintf(stderr, "nanoserve-prefill: warmed up in %.0f ms\n", *warm);
    MapStorePoolBeforeServing(store, "nanoserve-prefill");
  }
  PrefillHandler handler(&stage, ModelIdentityFor(o.service.model));
  WorkerPool workers(static_cast<int>(o.workers));
  PrefillService service(&handler, &workers);
  absl::Status served = ServeUntilSignal(ServerOptionsFor(o.service), {&service}, &metrics);
  stage.Shutdown();  // calls still waiting for a batch end now, so the workers can stop
  return served.ok() ? 0 : ServiceError(served);
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  nanoserve::KeepFreedHostMemoryForReuse();
  nanoserve::InitService(argc, argv, nanoserve::PrefillOptions::Info());
  return nanoserve::Run(nanoserve::PrefillOptionsFromFlags());
}
