#include "kv_store/client/store_client_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "base/flag_range.h"
#include "rpc/service_main.h"

ABSL_FLAG(std::string, kv_store, "127.0.0.1:50051",
          "KV store address; empty = no store: prompts are computed in full");
NANOSERVE_FLAG_IN_RANGE(store_timeout_ms, 10000, 1, 3600000, "deadline of each KV store call");
NANOSERVE_FLAG_IN_RANGE(chunk_kb, 1024, 1, 2096128,
                        "page bytes per Put chunk, and asked of Fetch, in KiB");
ABSL_FLAG(std::string, kv_transport, "auto",
          "how pages cross to and from the store: auto (map its pool in place when on its host "
          "and allowed: shared memory or CUDA IPC; bytes otherwise), cuda_ipc, shm or bytes");

namespace nanoserve {

absl::StatusOr<RemoteStore> RemoteStoreFromFlags() {
  auto transport = ParseKvTransport(absl::GetFlag(FLAGS_kv_transport));
  if (!transport.ok()) return transport.status();
  if (absl::GetFlag(FLAGS_kv_store).empty()) return RemoteStore{};
  KvStoreClientOptions options;
  options.target = absl::GetFlag(FLAGS_kv_store);
  options.max_message_bytes = MaxMessageBytesFromFlags();
  options.chunk_bytes = absl::GetFlag(FLAGS_chunk_kb) << 10;
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_store_timeout_ms));
  options.credentials = CredentialsFromFlags().channel;
  options.transport = *transport;
  if (absl::StatusOr<ModelOptions> model = ModelOptionsFromFlags(); model.ok()) {
    options.device = model->device;
  }
  RemoteStore remote;
  remote.client = std::make_unique<KvStoreClient>(options);
  remote.store = std::make_unique<RemotePrefixStore>(remote.client.get());
  return remote;
}

}  // namespace nanoserve
