// nanoserve-kv-store: the radix-indexed KV store service. Its flags are
// KvStoreOptions (options/kv_store_options.h), read in kv_store_flags.cc.
#include <algorithm>
#include <cstdio>
#include <utility>

#include "engine/model_fingerprint.h"
#include "kv_cache/prefix_cache.h"
#include "kv_store/server/kv_store_flags.h"
#include "kv_store/server/kv_store_handler.h"
#include "kv_store/server/kv_store_service.h"
#include "kv_store/server/lease_reaper.h"
#include "kv_store/server/warm_restart.h"
#include "rpc/service_main.h"

namespace nanoserve {
namespace {

// --snapshot_dir, and the fingerprint of the model and its seed when it is
// set; snapshots off (with a log line) when the model's files cannot be read.
WarmRestartOptions WarmRestartFor(const KvStoreOptions& o) {
  WarmRestartOptions warm;
  warm.snapshot_dir = o.snapshot_dir;
  if (warm.snapshot_dir.empty()) return warm;
  auto fingerprint = ModelFingerprint(ModelSpecFor(o.service.model), o.service.model.seed);
  if (!fingerprint.ok()) {
    std::fprintf(stderr, "nanoserve-kv-store: snapshots off: %s\n",
                 fingerprint.status().ToString().c_str());
    warm.snapshot_dir.clear();
    return warm;
  }
  warm.model_fingerprint = *std::move(fingerprint);
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
  const WarmRestartOptions warm = WarmRestartFor(o);
  const SnapshotStats loaded =
      warm.snapshot_dir.empty() ? SnapshotStats() : LoadAtStart(cache->get(), warm);
  MetricsRegistry metrics;
  AddSnapshotMetrics(loaded, &metrics);
  KvStoreHandler handler(cache->get(), *handler_options, &metrics);
  KvStoreService service(&handler);
  LeaseReaper reaper(&handler, std::min(cache_options.lease_ttl, handler_options->reservation_ttl));
  absl::Status served = ServeUntilSignal(ServerOptionsFor(o.service), {&service}, &metrics);
  // Served and stopped: nothing writes the pool now.
  if (served.ok() && !warm.snapshot_dir.empty()) SaveAtStop(**cache, warm).IgnoreError();
  return served.ok() ? 0 : ServiceError(served);
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  // The store reads only the model's shape: random:gpt2's unless told.
  nanoserve::InitService(argc, argv, nanoserve::KvStoreOptions::Info());
  return nanoserve::Run(nanoserve::KvStoreOptionsFromFlags());
}
