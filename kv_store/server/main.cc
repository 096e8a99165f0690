// nanoserve-kv-store: the radix-indexed KV store service.
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "base/flag_range.h"
#include "engine/kv_cache.h"
#include "kv_cache/prefix_cache.h"
#include "kv_store/server/kv_store_handler.h"
#include "kv_store/server/kv_store_service.h"
#include "kv_store/server/lease_reaper.h"
#include "rpc/service_main.h"

NANOSERVE_FLAG_IN_RANGE(page_size, 16, 1, 4096, "tokens per page");
NANOSERVE_FLAG_IN_RANGE(pool_mb, 1024, 1, 16777216, "page pool budget in MiB");
NANOSERVE_FLAG_IN_RANGE(lease_ttl_s, 60, 0, 86400,
                        "release leases not renewed so long (0 = never)");
NANOSERVE_FLAG_IN_RANGE(chunk_kb, 1024, 1, 2096128, "largest Fetch page chunk in KiB");
ABSL_FLAG(std::string, writer_identities, "prefill",
          "with TLS: comma list of certificate names (common or DNS alternative names) that "
          "may Put; everyone else gets PERMISSION_DENIED. Without TLS everyone may write");

namespace nanoserve {
namespace {

// Who may Put: --writer_identities with TLS, anyone without.
absl::StatusOr<std::vector<std::string>> WriterIdentitiesFromFlags() {
  if (!CredentialsFromFlags().tls) {
    std::fprintf(stderr, "nanoserve-kv-store: no TLS: every caller may write (loopback only)\n");
    return std::vector<std::string>();
  }
  std::vector<std::string> writers;
  for (absl::string_view writer :
       absl::StrSplit(absl::GetFlag(FLAGS_writer_identities), ',', absl::SkipWhitespace())) {
    writers.emplace_back(absl::StripAsciiWhitespace(writer));
  }
  if (writers.empty()) {
    return absl::InvalidArgumentError("--writer_identities is empty: name who may write");
  }
  return writers;
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
  auto cache = PrefixCache::Create(cache_options);
  if (!cache.ok()) return ServiceError(cache.status());

  auto writers = WriterIdentitiesFromFlags();
  if (!writers.ok()) return ServiceError(writers.status());
  MetricsRegistry metrics;
  KvStoreHandlerOptions handler_options;
  handler_options.writer_identities = *std::move(writers);
  handler_options.max_chunk_bytes = absl::GetFlag(FLAGS_chunk_kb) << 10;
  handler_options.vocab_size = config->vocab_size;
  handler_options.max_tokens = config->n_positions;
  KvStoreHandler handler(cache->get(), handler_options, &metrics);
  KvStoreService service(&handler);
  LeaseReaper reaper(&handler, cache_options.lease_ttl);
  absl::Status served = ServeUntilSignal(ServerOptionsFromFlags(), {&service}, &metrics);
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
