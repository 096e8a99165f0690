// The KV store's warm restart: at start it loads the cached prefixes a
// previous store saved in its snapshot directory; on a graceful stop it
// saves them there (kv_cache/snapshot.h has the format and its checks).
// Either step failing costs the cache, never the start or correctness: the
// store starts cold and says why in one log line.
//
// Thread safety: REQUIRES what SaveSnapshot and LoadSnapshot do: nothing
// else uses the cache meanwhile (load before serving, save after).
#ifndef NANOSERVE_KV_STORE_SERVER_WARM_RESTART_H_
#define NANOSERVE_KV_STORE_SERVER_WARM_RESTART_H_

#include <string>

#include "absl/status/status.h"
#include "base/metrics.h"
#include "kv_cache/prefix_cache.h"
#include "kv_cache/snapshot.h"

namespace nanoserve {

struct WarmRestartOptions {
  // Where the snapshot lives (created with its parents if missing); empty:
  // off.
  std::string snapshot_dir;
  // The model the cached K/V come from (engine/model_fingerprint.h); a
  // snapshot of another is not loaded.
  std::string model_fingerprint;
  // Log lines start with this, e.g. "nanoserve-kv-store".
  std::string log_name = "nanoserve-kv-store";
};

// Loads <snapshot_dir>/kv_store.snapshot into `cache` (empty) and logs
// "warm start: ..." with what and how fast, or "cold start: <why>". Returns
// what was loaded (zeros for a cold start).
SnapshotStats LoadAtStart(PrefixCache* cache, const WarmRestartOptions& options);

// The start's load on `metrics` (gauges that keep `loaded`):
//   nanoserve_kv_store_snapshot_load_seconds    its wall time (0: cold start)
//   nanoserve_kv_store_snapshot_pages_loaded    pages it put in the pool
//   nanoserve_kv_store_snapshot_tokens_loaded   the cached tokens they hold
// The save at stop has none: it runs after the metrics page has stopped
// (its log line says how long it took).
void AddSnapshotMetrics(const SnapshotStats& loaded, MetricsRegistry* metrics);

// Saves `cache` to <snapshot_dir>/kv_store.snapshot and logs what and how
// fast, or why not. The status of SaveSnapshot.
absl::Status SaveAtStop(const PrefixCache& cache, const WarmRestartOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_SERVER_WARM_RESTART_H_
