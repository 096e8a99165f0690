#include "options/kv_store_options.h"

namespace nanoserve {

ServiceInfo KvStoreOptions::Info() {
  return {"nanoserve-kv-store", "127.0.0.1:50051", "127.0.0.1:9151", ""};
}

std::vector<std::string> KvStoreOptions::ToArgv() const {
  std::vector<std::string> argv = service.ToArgv();
  AppendArgv(
      {FlagArg("page_size", page_size), FlagArg("pool_mb", pool_mb),
       FlagArg("lease_ttl_s", lease_ttl_s), FlagArg("chunk_kb", chunk_kb),
       FlagArg("share_pool", share_pool), FlagArg("pool_identities", pool_identities),
       FlagArg("reservation_ttl_s", reservation_ttl_s),
       FlagArg("writer_identities", writer_identities), FlagArg("snapshot_dir", snapshot_dir),
       FlagArg("max_leases_per_caller", max_leases_per_caller),
       FlagArg("max_pinned_pages_per_caller", max_pinned_pages_per_caller),
       FlagArg("max_puts_per_caller", max_puts_per_caller),
       FlagArg("max_put_mb_per_caller", max_put_mb_per_caller),
       FlagArg("put_idle_timeout_s", put_idle_timeout_s),
       FlagArg("max_reserved_pages_per_caller", max_reserved_pages_per_caller)},
      &argv);
  return argv;
}

}  // namespace nanoserve
