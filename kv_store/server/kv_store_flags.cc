#include "kv_store/server/kv_store_flags.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/flag_range.h"
#include "engine/kv_cache.h"
#include "engine/memory_budget.h"
#include "kv_cache/shared_memory.h"
#include "rpc/service_main.h"

NANOSERVE_FLAG_IN_RANGE(page_size, nanoserve::KvStoreOptions().page_size, 1, 4096,
                        "tokens per page");
NANOSERVE_FLAG_IN_RANGE(pool_mb, nanoserve::KvStoreOptions().pool_mb, 1, 16777216,
                        "page pool budget in MiB");
NANOSERVE_FLAG_IN_RANGE(lease_ttl_s, nanoserve::KvStoreOptions().lease_ttl_s, 0, 86400,
                        "release leases not renewed so long (0 = never)");
NANOSERVE_FLAG_IN_RANGE(chunk_kb, nanoserve::KvStoreOptions().chunk_kb, 1, 2096128,
                        "largest Fetch page chunk in KiB");
ABSL_FLAG(bool, share_pool, nanoserve::KvStoreOptions().share_pool,
          "export the page pool to peers on this host (a shared-memory segment on the CPU, "
          "CUDA IPC on a GPU), so they move pages in place; false: bytes over gRPC only");
ABSL_FLAG(std::string, pool_identities, nanoserve::KvStoreOptions().pool_identities,
          "with TLS: comma list of certificate names that may map the pool; without TLS any "
          "peer on this host may");
NANOSERVE_FLAG_IN_RANGE(reservation_ttl_s, nanoserve::KvStoreOptions().reservation_ttl_s, 1, 3600,
                        "free pages reserved for a writer in place that it has not committed "
                        "within this");
ABSL_FLAG(std::string, writer_identities, nanoserve::KvStoreOptions().writer_identities,
          "with TLS: comma list of certificate names (common or DNS alternative names) that "
          "may Put; everyone else gets PERMISSION_DENIED. Without TLS everyone may write");
ABSL_FLAG(std::string, snapshot_dir, nanoserve::KvStoreOptions().snapshot_dir,
          "warm restarts: on a graceful stop (SIGTERM) save the cached prefixes and their pages "
          "to a file here, and at start load it when the model (--model, --seed) and the page "
          "layout match; anything else starts cold, with a log line. Empty: off");
NANOSERVE_FLAG_IN_RANGE(max_leases_per_caller, nanoserve::KvStoreOptions().max_leases_per_caller, 0,
                        1048576,
                        "leases one caller (TLS identity, else address) holds at once; beyond: "
                        "RESOURCE_EXHAUSTED (0 = no bound)");
NANOSERVE_FLAG_IN_RANGE(max_pinned_pages_per_caller,
                        nanoserve::KvStoreOptions().max_pinned_pages_per_caller, 0, 1073741824,
                        "pages one caller's leases pin at once (0 = three quarters of the pool)");
NANOSERVE_FLAG_IN_RANGE(max_puts_per_caller, nanoserve::KvStoreOptions().max_puts_per_caller, 0,
                        65536, "Put streams one caller has open at once (0 = no bound)");
NANOSERVE_FLAG_IN_RANGE(max_put_mb_per_caller, nanoserve::KvStoreOptions().max_put_mb_per_caller, 0,
                        1048576,
                        "MiB of page bytes one caller's Put streams buffer at once (0 = no bound "
                        "but the store's 256 MiB over all callers)");
NANOSERVE_FLAG_IN_RANGE(put_idle_timeout_s, nanoserve::KvStoreOptions().put_idle_timeout_s, 1, 3600,
                        "cancel a Put stream on which nothing arrives for this long");
NANOSERVE_FLAG_IN_RANGE(max_reserved_pages_per_caller,
                        nanoserve::KvStoreOptions().max_reserved_pages_per_caller, 0, 1073741824,
                        "pages one caller holds reserved for writing in place and not committed "
                        "(0 = as many as all writers together may: half the pool)");

namespace nanoserve {
namespace {

std::vector<std::string> NameList(const std::string& list) {
  std::vector<std::string> names;
  for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    names.emplace_back(absl::StripAsciiWhitespace(name));
  }
  return names;
}

// The bounds per caller; --max_pinned_pages_per_caller 0: three quarters of
// the pages `cache`'s pool holds; --max_reserved_pages_per_caller 0:
// `max_reserved_pages` (the handler's bound on the pages all writers hold
// reserved: without TLS prefill and decode are one caller, and prefill's
// batches of 64 prompts need it).
CallerQuotaOptions CallerQuotaOptionsFor(const KvStoreOptions& options,
                                         const PrefixCacheOptions& cache,
                                         int64_t max_reserved_pages) {
  CallerQuotaOptions quotas;
  const int64_t page_bytes = cache.pool.layout.bytes_per_page();
  quotas.max_leases = options.max_leases_per_caller;
  quotas.max_pinned_pages = options.max_pinned_pages_per_caller;
  if (quotas.max_pinned_pages == 0) {
    quotas.max_pinned_pages = std::max<int64_t>(1, cache.pool.byte_budget / page_bytes * 3 / 4);
  }
  quotas.max_reserved_pages = options.max_reserved_pages_per_caller;
  if (quotas.max_reserved_pages == 0) {
    quotas.max_reserved_pages = std::max<int64_t>(1, max_reserved_pages);
  }
  quotas.max_puts = options.max_puts_per_caller;
  quotas.max_put_bytes = options.max_put_mb_per_caller << 20;
  return quotas;
}

}  // namespace

KvStoreOptions KvStoreOptionsFromFlags() {
  KvStoreOptions options;
  options.service = ServiceOptionsFromFlags();
  options.page_size = absl::GetFlag(FLAGS_page_size);
  options.pool_mb = absl::GetFlag(FLAGS_pool_mb);
  options.lease_ttl_s = absl::GetFlag(FLAGS_lease_ttl_s);
  options.chunk_kb = absl::GetFlag(FLAGS_chunk_kb);
  options.share_pool = absl::GetFlag(FLAGS_share_pool);
  options.pool_identities = absl::GetFlag(FLAGS_pool_identities);
  options.reservation_ttl_s = absl::GetFlag(FLAGS_reservation_ttl_s);
  options.snapshot_dir = absl::GetFlag(FLAGS_snapshot_dir);
  options.writer_identities = absl::GetFlag(FLAGS_writer_identities);
  options.max_leases_per_caller = absl::GetFlag(FLAGS_max_leases_per_caller);
  options.max_pinned_pages_per_caller = absl::GetFlag(FLAGS_max_pinned_pages_per_caller);
  options.max_puts_per_caller = absl::GetFlag(FLAGS_max_puts_per_caller);
  options.max_put_mb_per_caller = absl::GetFlag(FLAGS_max_put_mb_per_caller);
  options.put_idle_timeout_s = absl::GetFlag(FLAGS_put_idle_timeout_s);
  options.max_reserved_pages_per_caller = absl::GetFlag(FLAGS_max_reserved_pages_per_caller);
  return options;
}

PrefixCacheOptions PrefixCacheOptionsFor(const KvStoreOptions& options, const Gpt2Config& config,
                                         const ModelOptions& model) {
  PrefixCacheOptions cache;
  cache.pool.layout = KvPageLayout(config, model.dtype, options.page_size);
  cache.pool.byte_budget = options.pool_mb << 20;
  cache.pool.device = model.device;
  cache.lease_ttl =
      options.lease_ttl_s > 0 ? absl::Seconds(options.lease_ttl_s) : absl::InfiniteDuration();
  cache.pool.epoch = NewEpoch();
  cache.pool.exported = options.share_pool;
  return cache;
}

absl::StatusOr<std::unique_ptr<PrefixCache>> CreateStoreCache(PrefixCacheOptions* options) {
  if (auto available = AvailableMemory(options->pool.device); available.ok()) {
    absl::Status fits = CheckFits(options->pool.byte_budget, *available, options->pool.device,
                                  "the page pool (--pool_mb)", "lower --pool_mb");
    if (!fits.ok()) return fits;
  }
  auto cache = PrefixCache::Create(*options);
  if (!cache.ok() && options->pool.exported &&
      cache.status().code() == absl::StatusCode::kUnavailable) {
    std::fprintf(stderr, "nanoserve-kv-store: the pool cannot be shared (%s): bytes only\n",
                 std::string(cache.status().message()).c_str());
    options->pool.exported = false;
    cache = PrefixCache::Create(*options);
  }
  if (!cache.ok()) return cache.status();
  const SharedSegment& segment = (*cache)->segment();
  std::fprintf(stderr, "nanoserve-kv-store: pool of %lld pages on %s, exported as %s%s%s\n",
               static_cast<long long>((*cache)->num_pages()), options->pool.device.str().c_str(),
               segment.transport == KvTransport::kBytes
                   ? "nothing (bytes only)"
                   : std::string(KvTransportName(segment.transport)).c_str(),
               segment.shm_name.empty() ? "" : " ", segment.shm_name.c_str());
  return cache;
}

absl::StatusOr<KvStoreHandlerOptions> KvStoreHandlerOptionsFor(const KvStoreOptions& options,
                                                               const Gpt2Config& config,
                                                               const PrefixCacheOptions& cache,
                                                               bool tls) {
  KvStoreHandlerOptions handler;
  handler.max_chunk_bytes = options.chunk_kb << 10;
  handler.vocab_size = config.vocab_size;
  handler.max_tokens = config.n_positions;
  handler.epoch = cache.pool.epoch;
  handler.pool_identities = NameList(options.pool_identities);
  handler.reservation_ttl = absl::Seconds(options.reservation_ttl_s);
  // Half the pool may be written in place at once (it was bounded by the
  // Put streams' 256 MiB, 455 GPT-2 124M pages in bf16: a prefill batch of
  // 57 prompts of 128 tokens passed it, and the rest of the batch was not
  // stored, so decode computed those prompts again).
  handler.max_reserved_pages =
      std::max<int64_t>(1, cache.pool.byte_budget / cache.pool.layout.bytes_per_page() / 2);
  handler.quotas = CallerQuotaOptionsFor(options, cache, handler.max_reserved_pages);
  handler.put_idle_timeout = absl::Seconds(options.put_idle_timeout_s);
  if (!tls) {
    std::fprintf(stderr, "nanoserve-kv-store: no TLS: every caller may write (loopback only)\n");
    return handler;
  }
  handler.writer_identities = NameList(options.writer_identities);
  if (handler.writer_identities.empty()) {
    return absl::InvalidArgumentError("--writer_identities is empty: name who may write");
  }
  return handler;
}

}  // namespace nanoserve
