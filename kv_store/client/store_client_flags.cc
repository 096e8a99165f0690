#include "kv_store/client/store_client_flags.h"

#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/flag_range.h"
#include "rpc/service_main.h"

ABSL_FLAG(std::string, kv_store, nanoserve::StoreClientOptions().kv_store,
          "KV store address; empty = no store: prompts are computed in full");
NANOSERVE_FLAG_IN_RANGE(store_timeout_ms, nanoserve::StoreClientOptions().store_timeout_ms, 1,
                        3600000, "deadline of each KV store call");
NANOSERVE_FLAG_IN_RANGE(chunk_kb, nanoserve::StoreClientOptions().chunk_kb, 1, 2096128,
                        "page bytes per Put chunk, and asked of Fetch, in KiB");
ABSL_FLAG(std::string, kv_transport, nanoserve::StoreClientOptions().kv_transport,
          "how pages cross to and from the store: auto (map its pool in place when on its host "
          "and allowed: shared memory or CUDA IPC; bytes otherwise), cuda_ipc, shm or bytes");

namespace nanoserve {

StoreClientOptions StoreClientOptionsFromFlags() {
  StoreClientOptions store;
  store.kv_store = absl::GetFlag(FLAGS_kv_store);
  store.store_timeout_ms = absl::GetFlag(FLAGS_store_timeout_ms);
  store.chunk_kb = absl::GetFlag(FLAGS_chunk_kb);
  store.kv_transport = absl::GetFlag(FLAGS_kv_transport);
  return store;
}

absl::StatusOr<RemoteStore> ConnectRemoteStore(const StoreClientOptions& store,
                                               const ServiceOptions& service) {
  auto transport = ParseKvTransport(store.kv_transport);
  if (!transport.ok()) return transport.status();
  if (store.kv_store.empty()) return RemoteStore{};
  KvStoreClientOptions options;
  options.target = store.kv_store;
  options.max_message_bytes = MaxMessageBytes(service);
  options.chunk_bytes = store.chunk_kb << 10;
  options.timeout = absl::Milliseconds(store.store_timeout_ms);
  options.credentials = CredentialsFromFlags().channel;
  options.transport = *transport;
  options.model_fingerprint = ModelIdentityFor(service.model);
  if (absl::StatusOr<ModelOptions> model = ModelOptionsFor(service.model); model.ok()) {
    options.device = model->device;
  }
  RemoteStore remote;
  remote.client = std::make_unique<KvStoreClient>(options);
  remote.store = std::make_unique<RemotePrefixStore>(remote.client.get());
  return remote;
}

void MapStorePoolBeforeServing(const RemoteStore& store, const char* who) {
  if (store.client == nullptr) return;
  const absl::Time start = absl::Now();
  absl::StatusOr<std::shared_ptr<const KvStoreClient::MappedPool>> pool = store.client->Pool();
  if (!pool.ok()) {
    std::fprintf(stderr, "%s: the kv store's pool not mapped before serving (%s): at first use\n",
                 who, std::string(pool.status().message()).c_str());
    return;
  }
  std::fprintf(stderr, "%s: kv store transport %s, ready in %.1f ms\n", who,
               store.client->TransportDescription().c_str(),
               absl::ToDoubleMilliseconds(absl::Now() - start));
}

}  // namespace nanoserve
