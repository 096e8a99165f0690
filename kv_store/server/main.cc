// nanoserve-kv-store: the radix-indexed KV store service.
#include <cstdio>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/notification.h"
#include "engine/device.h"
#include "engine/kv_cache.h"
#include "engine/model_loader.h"
#include "kv_store/prefix_cache.h"
#include "kv_store/server/kv_store_handler.h"
#include "kv_store/server/kv_store_service.h"
#include "rpc/server_runner.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC address (host:port; port 0 = any)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9151", "Prometheus /metrics address; empty = off");
ABSL_FLAG(std::string, port_file, "", "write the gRPC and metrics ports here once serving");
ABSL_FLAG(std::string, model, "random:gpt2", "model whose K/V is stored (only its shape is read)");
ABSL_FLAG(std::string, device, "cpu", "where the page pool lives: cpu or cuda");
ABSL_FLAG(std::string, dtype, "fp32", "K/V dtype: fp32, bf16 or fp16 (must match the engines)");
ABSL_FLAG(int64_t, page_size, 16, "tokens per page");
ABSL_FLAG(int64_t, pool_mb, 1024, "page pool budget in MiB");
ABSL_FLAG(int64_t, lease_ttl_s, 60, "release leases not renewed for this long (0 = never)");
ABSL_FLAG(int64_t, max_message_mb, 8, "largest gRPC message in MiB");
ABSL_FLAG(int64_t, chunk_kb, 1024, "largest Fetch page chunk in KiB");

namespace nanoserve {
namespace {

int Run() {
  auto config = LoadModelConfig(absl::GetFlag(FLAGS_model));
  auto device = ParseDevice(absl::GetFlag(FLAGS_device));
  auto dtype = ParseDtype(absl::GetFlag(FLAGS_dtype));
  for (const absl::Status& s : {config.status(), device.status(), dtype.status()}) {
    if (!s.ok()) {
      std::fprintf(stderr, "nanoserve-kv-store: %s\n", s.ToString().c_str());
      return 2;
    }
  }
  PrefixCacheOptions cache_options;
  cache_options.pool.layout = KvPageLayout(*config, *dtype, absl::GetFlag(FLAGS_page_size));
  cache_options.pool.byte_budget = absl::GetFlag(FLAGS_pool_mb) << 20;
  cache_options.pool.device = *device;
  const int64_t ttl_s = absl::GetFlag(FLAGS_lease_ttl_s);
  cache_options.lease_ttl = ttl_s > 0 ? absl::Seconds(ttl_s) : absl::InfiniteDuration();
  auto cache = PrefixCache::Create(cache_options);
  if (!cache.ok()) {
    std::fprintf(stderr, "nanoserve-kv-store: %s\n", cache.status().ToString().c_str());
    return 2;
  }

  MetricsRegistry metrics;
  KvStoreHandlerOptions handler_options;
  handler_options.max_chunk_bytes = absl::GetFlag(FLAGS_chunk_kb) << 10;
  handler_options.vocab_size = config->vocab_size;
  handler_options.max_tokens = config->n_positions;
  KvStoreHandler handler(cache->get(), handler_options, &metrics);
  KvStoreService service(&handler);

  // Leases of holders that died expire: reap a few times per TTL.
  absl::Notification stop;
  std::thread reaper([&] {
    const absl::Duration period =
        ttl_s > 0 ? absl::Milliseconds(std::max<int64_t>(100, ttl_s * 250)) : absl::Hours(1);
    while (!stop.WaitForNotificationWithTimeout(period)) handler.ReapExpiredLeases();
  });

  ServerOptions server;
  server.name = "nanoserve-kv-store";
  server.listen = absl::GetFlag(FLAGS_listen);
  server.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  server.port_file = absl::GetFlag(FLAGS_port_file);
  server.max_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  absl::Status served = ServeUntilSignal(server, {&service}, &metrics);
  stop.Notify();
  reaper.join();
  if (!served.ok()) {
    std::fprintf(stderr, "nanoserve-kv-store: %s\n", served.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace nanoserve

int main(int argc, char** argv) {
  nanoserve::BlockTerminationSignals();
  absl::ParseCommandLine(argc, argv);
  return nanoserve::Run();
}
