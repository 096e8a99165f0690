// The KV store client of the stages that call the store (prefill, decode),
// from its flags, defined in store_client_flags.cc (so a binary that links
// this target takes them; StoreClientOptions, options/service_options.h,
// holds them with their defaults):
//   --kv_store           the store's address; empty = no store
//   --store_timeout_ms   the deadline of each store call
//   --chunk_kb           page bytes per Put chunk, and asked of Fetch
//   --kv_transport       auto|cuda_ipc|shm|bytes: the data plane
//                        (kv_store/client/kv_store_client.h)
// Messages are bounded by the service's --max_message_mb, and the channel
// secured by --tls_cert, --tls_key, --tls_ca (rpc/service_main.h).
//
// Thread safety: call after InitService (rpc/service_main.h).
#ifndef NANOSERVE_KV_STORE_CLIENT_STORE_CLIENT_FLAGS_H_
#define NANOSERVE_KV_STORE_CLIENT_STORE_CLIENT_FLAGS_H_

#include <memory>

#include "absl/status/statusor.h"

#include "kv_store/client/kv_store_client.h"
#include "kv_store/client/remote_prefix_store.h"
#include "options/service_options.h"

namespace nanoserve {

// --kv_store, --store_timeout_ms, --chunk_kb and --kv_transport as parsed.
StoreClientOptions StoreClientOptionsFromFlags();

// The store at `store.kv_store` as a PrefixStore, with the client it calls
// through; both null when the address is empty (the stage then computes
// every prompt in full).
struct RemoteStore {
  std::unique_ptr<KvStoreClient> client;
  std::unique_ptr<RemotePrefixStore> store;
};
// Maps the store's pool now (KvStoreClient::Pool) rather than at the first
// request's, which would pay for opening it (a CUDA IPC open: ~20-30 ms on
// an H100); logs what came of it as `who`. A store that does not answer yet
// is mapped at first use, as without this. No-op without a store. The
// services call it on a GPU, after their warm-up.
void MapStorePoolBeforeServing(const RemoteStore& store, const char* who);

// The client's messages are bounded by `service`'s, its channel secured by
// the credentials InitService loaded, pages mapped in place land on
// `service`'s model device, and a store of another model than `service`'s
// is refused (ModelIdentityFor). INVALID_ARGUMENT for a bad `store.kv_transport`.
absl::StatusOr<RemoteStore> ConnectRemoteStore(const StoreClientOptions& store,
                                               const ServiceOptions& service);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_STORE_CLIENT_STORE_CLIENT_FLAGS_H_
