// nanoserve-kv-store: the radix-indexed KV store service.
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "base/flag_range.h"
#include "engine/kv_cache.h"
#include "engine/model_fingerprint.h"
#include "kv_cache/prefix_cache.h"
#include "kv_cache/shared_memory.h"
#include "kv_store/server/kv_store_handler.h"
#include "kv_store/server/kv_store_service.h"
#include "kv_store/server/lease_reaper.h"
#include "kv_store/server/warm_restart.h"
#include "rpc/service_main.h"

NANOSERVE_FLAG_IN_RANGE(page_size, 16, 1, 4096, "tokens per page");
NANOSERVE_FLAG_IN_RANGE(pool_mb, 1024, 1, 16777216, "page pool budget in MiB");
NANOSERVE_FLAG_IN_RANGE(lease_ttl_s, 60, 0, 86400,
                        "release leases not renewed so long (0 = never)");
NANOSERVE_FLAG_IN_RANGE(chunk_kb, 1024, 1, 2096128, "largest Fetch page chunk in KiB");
ABSL_FLAG(bool, share_pool, true,
          "export the page pool to peers on this host (a shared-memory segment on the CPU, "
          "CUDA IPC on a GPU), so they move pages in place; false: bytes over gRPC only");
ABSL_FLAG(std::string, pool_identities, "prefill,decode",
          "with TLS: comma list of certificate names that may map the pool; without TLS any "
          "peer on this host may");
NANOSERVE_FLAG_IN_RANGE(reservation_ttl_s, 30, 1, 3600,
                        "free pages reserved for a writer in place that it has not committed "
                        "within this");
ABSL_FLAG(std::string, writer_identities, "prefill",
          "with TLS: comma list of certificate names (common or DNS alternative names) that "
          "may Put; everyone else gets PERMISSION_DENIED. Without TLS everyone may write");
ABSL_FLAG(std::string, snapshot_dir, "",
          "warm restarts: on a graceful stop (SIGTERM) save the cached prefixes and their pages "
          "to a file here, and at start load it when the model (--model, --seed) and the page "
          "layout match; anything else starts cold, with a log line. Empty: off");
// The seed of random weights names the model whose K/V a snapshot holds.
ABSL_DECLARE_FLAG(uint64_t, seed);

namespace nanoserve {
namespace {

std::vector<std::string> NameList(const std::string& list) {
  std::vector<std::string> names;
  for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    names.emplace_back(absl::StripAsciiWhitespace(name));
  }
  return names;
}

// Who may Put: --writer_identities with TLS, anyone without.
absl::StatusOr<std::vector<std::string>> WriterIdentitiesFromFlags() {
  if (!CredentialsFromFlags().tls) {
    std::fprintf(stderr, "nanoserve-kv-store: no TLS: every caller may write (loopback only)\n");
    return std::vector<std::string>();
  }
  std::vector<std::string> writers = NameList(absl::GetFlag(FLAGS_writer_identities));
  if (writers.empty()) {
    return absl::InvalidArgumentError("--writer_identities is empty: name who may write");
  }
  return writers;
}

// --snapshot_dir, and the fingerprint of --model and --seed when it is set;
// snapshots off (with a log line) when the model's files cannot be read.
WarmRestartOptions WarmRestartFromFlags() {
  WarmRestartOptions warm;
  warm.snapshot_dir = absl::GetFlag(FLAGS_snapshot_dir);
  if (warm.snapshot_dir.empty()) return warm;
  auto fingerprint = ModelFingerprint(ModelSpecFromFlags(), absl::GetFlag(FLAGS_seed));
  if (!fingerprint.ok()) {
    std::fprintf(stderr, "nanoserve-kv-store: snapshots off: %s\n",
                 fingerprint.status().ToString().c_str());
    warm.snapshot_dir.clear();
    return warm;
  }
  warm.model_fingerprint = *std::move(fingerprint);
  return warm;
}

int Run() {
  auto config = ModelConfigFromFlags();
  if (!config.ok()) return ServiceError(config.status());
  auto model = ModelOptionsFromFlags();  // the pool's device and dtype
  if (!model.ok()) return ServiceError(model.status());
  PrefixCacheOptions cache_options;
  cache_options.pool.layout = KvPageLayout(*config, model->dtype, absl::GetFlag(FLAGS_page_size));
  cache_options.pool.byte_budget = absl::GetFlag(FLAGS_pool_mb) << 20;
  cache_options.pool.device = model->device;
  const int64_t ttl_s = absl::GetFlag(FLAGS_lease_ttl_s);
  cache_options.lease_ttl = ttl_s > 0 ? absl::Seconds(ttl_s) : absl::InfiniteDuration();
  cache_options.pool.epoch = NewEpoch();
  cache_options.pool.exported = absl::GetFlag(FLAGS_share_pool);
  auto cache = PrefixCache::Create(cache_options);
  if (!cache.ok() && cache_options.pool.exported &&
      cache.status().code() == absl::StatusCode::kUnavailable) {
    std::fprintf(stderr, "nanoserve-kv-store: the pool cannot be shared (%s): bytes only\n",
                 std::string(cache.status().message()).c_str());
    cache_options.pool.exported = false;
    cache = PrefixCache::Create(cache_options);
  }
  if (!cache.ok()) return ServiceError(cache.status());
  const SharedSegment& segment = (*cache)->segment();
  std::fprintf(stderr, "nanoserve-kv-store: pool of %lld pages on %s, exported as %s%s%s\n",
               static_cast<long long>((*cache)->num_pages()), model->device.str().c_str(),
               segment.transport == KvTransport::kBytes
                   ? "nothing (bytes only)"
                   : std::string(KvTransportName(segment.transport)).c_str(),
               segment.shm_name.empty() ? "" : " ", segment.shm_name.c_str());

  auto writers = WriterIdentitiesFromFlags();
  if (!writers.ok()) return ServiceError(writers.status());
  MetricsRegistry metrics;
  KvStoreHandlerOptions handler_options;
  handler_options.writer_identities = *std::move(writers);
  handler_options.max_chunk_bytes = absl::GetFlag(FLAGS_chunk_kb) << 10;
  handler_options.vocab_size = config->vocab_size;
  handler_options.max_tokens = config->n_positions;
  handler_options.epoch = cache_options.pool.epoch;
  handler_options.pool_identities = NameList(absl::GetFlag(FLAGS_pool_identities));
  handler_options.reservation_ttl = absl::Seconds(absl::GetFlag(FLAGS_reservation_ttl_s));
  const WarmRestartOptions warm = WarmRestartFromFlags();
  if (!warm.snapshot_dir.empty()) LoadAtStart(cache->get(), warm);
  KvStoreHandler handler(cache->get(), handler_options, &metrics);
  KvStoreService service(&handler);
  LeaseReaper reaper(&handler, std::min(cache_options.lease_ttl, handler_options.reservation_ttl));
  absl::Status served = ServeUntilSignal(ServerOptionsFromFlags(), {&service}, &metrics);
  // Served and stopped: nothing writes the pool now.
  if (served.ok() && !warm.snapshot_dir.empty()) SaveAtStop(**cache, warm).IgnoreError();
  return served.ok() ? 0 : ServiceError(served);
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  // The store reads only the model's shape: random:gpt2's unless told.
  nanoserve::InitService(
      argc, argv, {"nanoserve-kv-store", "127.0.0.1:50051", "127.0.0.1:9151", "random:gpt2"});
  return nanoserve::Run();
}
