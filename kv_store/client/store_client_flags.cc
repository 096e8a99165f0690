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

namespace nanoserve {

RemoteStore RemoteStoreFromFlags() {
  if (absl::GetFlag(FLAGS_kv_store).empty()) return {};
  KvStoreClientOptions options;
  options.target = absl::GetFlag(FLAGS_kv_store);
  options.max_message_bytes = MaxMessageBytesFromFlags();
  options.chunk_bytes = absl::GetFlag(FLAGS_chunk_kb) << 10;
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_store_timeout_ms));
  options.credentials = CredentialsFromFlags().channel;
  RemoteStore remote;
  remote.client = std::make_unique<KvStoreClient>(options);
  remote.store = std::make_unique<RemotePrefixStore>(remote.client.get());
  return remote;
}

}  // namespace nanoserve
