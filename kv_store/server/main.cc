// nanoserve-kv-store: the radix-indexed KV store service. Its flags are
// KvStoreOptions (options/kv_store_options.h), read in kv_store_flags.cc.
#include <algorithm>
#include <cstdio>

#include "kv_cache/prefix_cache.h"
#include "kv_store/server/kv_store_flags.h"
#include "kv_store/server/kv_store_handler.h"
#include "kv_store/server/kv_store_service.h"
#include "kv_store/server/lease_reaper.h"
#include "kv_store/server/warm_restart.h"
#include "rpc/service_main.h"

namespace nanoserve {
namespace {

// --snapshot_dir, its snapshots stamped with the model's `fingerprint`; off
// (with a log line) when that is unknown (the model's files unreadable).
WarmRestartOptions WarmRestartFor(const KvStoreOptions& o, const std::string& fingerprint) {
  WarmRestartOptions warm;
  warm.snapshot_dir = o.snapshot_dir;
  warm.model_fingerprint = fingerprint;
  if (!warm.snapshot_dir.empty() && fingerprint.empty()) {
    std::fprintf(stderr, "nanoserve-kv-store: snapshots off: the model's fingerprint is unknown\n");
    warm.snapshot_dir.clear();
  }
  return warm;
}

int Run(const KvStoreOptions& o) {
  auto config = ModelConfigFor(o.service.model);
  if (!config.ok()) return ServiceError(config.status());
  auto model = ModelOptionsFor(o.service.model);  // the pool's device and dtype
  if (!model.ok()) return ServiceError(model.status());
  PrefixCacheOptions cache_options = PrefixCacheOptionsFor(o, *config, *model);
  auto cache = CreateStoreCache(&cache_options);
  if (!cache.ok()) return ServiceError(cache.status());
  auto handler_options =
      KvStoreHandlerOptionsFor(o, *config, cache_options, CredentialsFromFlags().tls);
  if (!handler_options.ok()) return ServiceError(handler_options.status());
  handler_options->model_fingerprint = ModelIdentityFor(o.service.model);
  const WarmRestartOptions warm = WarmRestartFor(o, handler_options->model_fingerprint);
  const SnapshotStats loaded =
      warm.snapshot_dir.empty() ? SnapshotStats() : LoadAtStart(cache->get(), warm);
  MetricsRegistry metrics;
  AddSnapshotMetrics(loaded, &metrics);
  KvStoreHandler handler(cache->get(), *handler_options, &metrics);
  KvStoreService service(&handler);
  LeaseReaper reaper(&handler, std::min({cache_options.lease_ttl, handler_options->reservation_ttl,
                                         handler_options->put_idle_timeout}));
  absl::Status served = ServeUntilSignal(ServerOptionsFor(o.service), {&service}, &metrics);
  // Served and stopped: nothing writes the pool now.
  if (served.ok() && !warm.snapshot_dir.empty()) SaveAtStop(**cache, warm).IgnoreError();
  return served.ok() ? 0 : ServiceError(served);
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  nanoserve::InitService(argc, argv, nanoserve::KvStoreOptions::Info());
  return nanoserve::Run(nanoserve::KvStoreOptionsFromFlags());
}
