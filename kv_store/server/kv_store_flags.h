// nanoserve-kv-store's own flags, defined in kv_store_flags.cc (link it only
// into the binary, and into the test that round-trips them): --page_size,
// --pool_mb, --lease_ttl_s, --chunk_kb, --share_pool, --pool_identities,
// --reservation_ttl_s, --writer_identities, --snapshot_dir and the quotas per
// caller (--max_leases_per_caller, --max_pinned_pages_per_caller,
// --max_puts_per_caller, --max_put_mb_per_caller, --put_idle_timeout_s,
// --max_reserved_pages_per_caller).
// KvStoreOptions
// (options/kv_store_options.h) documents each. Also what the binary builds
// from them.
//
// Thread safety: call after InitService (rpc/service_main.h).
#ifndef NANOSERVE_KV_STORE_SERVER_KV_STORE_FLAGS_H_
#define NANOSERVE_KV_STORE_SERVER_KV_STORE_FLAGS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/model.h"
#include "kv_cache/prefix_cache.h"
#include "kv_store/server/kv_store_handler.h"
#include "options/kv_store_options.h"

namespace nanoserve {

// Every flag nanoserve-kv-store takes, as parsed: the shared ones
// (rpc/service_main.h) and its own.
KvStoreOptions KvStoreOptionsFromFlags();

// The store's cache: pages of `config`'s shape in `model`'s dtype, on its
// device, `options.page_size` tokens each, within `options.pool_mb`, exported
// to peers on this host with `options.share_pool`, under a new epoch; leases
// live `options.lease_ttl_s` (0: for ever).
PrefixCacheOptions PrefixCacheOptionsFor(const KvStoreOptions& options, const Gpt2Config& config,
                                         const ModelOptions& model);

// PrefixCache::Create(*options); where the pool cannot be shared
// (UNAVAILABLE), says so on stderr and creates it unshared (bytes only),
// clearing options->pool.exported. Logs the pool it made. Errors:
// RESOURCE_EXHAUSTED naming --pool_mb when the pool's budget exceeds the
// device's free memory (engine/memory_budget.h; not checked where that cannot
// be read), else those of PrefixCache::Create.
absl::StatusOr<std::unique_ptr<PrefixCache>> CreateStoreCache(PrefixCacheOptions* options);

// The handler's options: `options.chunk_kb`, `config`'s vocabulary and
// context, `cache`'s epoch, who may map the pool (`options.pool_identities`),
// how long a reservation lives, the quotas per caller (pinned pages 0: three
// quarters of `cache`'s pool; reserved pages 0: half of those the handler's
// max_put_buffer_bytes holds) and the Put streams' idle deadline, and who may
// Put: with `tls`, the names of
// `options.writer_identities` (INVALID_ARGUMENT when it names none);
// without, anyone (and a line on stderr says so).
absl::StatusOr<KvStoreHandlerOptions> KvStoreHandlerOptionsFor(const KvStoreOptions& options,
                                                               const Gpt2Config& config,
                                                               const PrefixCacheOptions& cache,
                                                               bool tls);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_SERVER_KV_STORE_FLAGS_H_
