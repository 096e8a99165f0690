// nanoserve-kv-store's command line as one struct (options/service_options.h
// says how the option structs and their flags fit): FromFlags in
// kv_store/server/kv_store_flags.h, ToArgv here.
#ifndef NANOSERVE_OPTIONS_KV_STORE_OPTIONS_H_
#define NANOSERVE_OPTIONS_KV_STORE_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "options/service_options.h"

namespace nanoserve {

struct KvStoreOptions {
  // nanoserve-kv-store, 127.0.0.1:50051, metrics 127.0.0.1:9151, and the
  // engines' default model, as prefill's and decode's: the store reads its
  // shape and its fingerprint, which its callers' must match
  // (base/model_identity.h).
  static ServiceInfo Info();

  ServiceOptions service{Info()};
  int64_t page_size = 16;  // --page_size: tokens per page
  int64_t pool_mb = 1024;  // --pool_mb: page pool budget in MiB
  // --lease_ttl_s: leases not renewed so long are released (0 = never).
  int64_t lease_ttl_s = 60;
  int64_t chunk_kb = 1024;  // --chunk_kb: largest Fetch page chunk in KiB
  // --share_pool: export the page pool to peers on this host (shared memory
  // on the CPU, CUDA IPC on a GPU); false: bytes over gRPC only.
  bool share_pool = true;
  // --pool_identities: with TLS, comma list of the certificate names that
  // may map the pool; without TLS any peer on this host may.
  std::string pool_identities = "prefill,decode";
  // --reservation_ttl_s: free pages reserved for a writer in place that it
  // has not committed within this are taken back.
  int64_t reservation_ttl_s = 30;
  // --writer_identities: with TLS, comma list of the certificate names that
  // may Put; without TLS everyone may write.
  std::string writer_identities = "prefill";
  // --snapshot_dir: warm restarts: on a graceful stop save the cached
  // prefixes and their pages to a file here, and at start load it when the
  // model (--model, --seed) and the page layout match. Empty: off.
  std::string snapshot_dir;
  // Quotas per caller (its TLS identity, else its address); beyond one the
  // call gets RESOURCE_EXHAUSTED naming it.
  // --max_leases_per_caller: leases one caller holds at once (0 = no bound).
  int64_t max_leases_per_caller = 4096;
  // --max_pinned_pages_per_caller: pages one caller's leases pin at once
  // (0 = three quarters of the pool).
  int64_t max_pinned_pages_per_caller = 0;
  // --max_puts_per_caller: Put streams one caller has open at once (0 = no
  // bound).
  int64_t max_puts_per_caller = 32;
  // --max_put_mb_per_caller: MiB of page bytes one caller's Put streams
  // buffer at once (0 = no bound but the store's 256 MiB over all callers).
  int64_t max_put_mb_per_caller = 128;
  // --put_idle_timeout_s: a Put stream on which nothing arrives for this long
  // is cancelled.
  int64_t put_idle_timeout_s = 10;
  // --max_reserved_pages_per_caller: pages one caller holds reserved for
  // writing in place and not committed (0 = as many as all writers together
  // may: half the pool).
  int64_t max_reserved_pages_per_caller = 0;

  // Every flag: the service's, then the store's own.
  std::vector<std::string> ToArgv() const;
};

}  // namespace nanoserve

#endif  // NANOSERVE_OPTIONS_KV_STORE_OPTIONS_H_
