// The KV store's warm restart, measured (nanoserve-snapshot-bench): a
// prefix cache of the store's layout is filled by a workload of shared
// system prompts and private suffixes until its pool is full, saved with
// SaveSnapshot and loaded into a fresh cache with LoadSnapshot; the table
// gives the save and load times (the load once with the file dropped from
// the page cache, once from it) and the prefix hit rate of the next
// requests with no restart, after a warm restart and after a cold one.
//
// Thread-compatible: one call at a time.
#ifndef NANOSERVE_BENCH_SNAPSHOT_BENCH_H_
#define NANOSERVE_BENCH_SNAPSHOT_BENCH_H_

#include <cstdint>
#include <string>

namespace nanoserve {

struct SnapshotBenchOptions {
  std::string model = "random:gpt2";  // the page layout's shape (a --model spec)
  std::string dtype = "fp32";
  int64_t page_size = 16;
  int64_t pool_mb = 1024;        // the store's --pool_mb
  std::string dir = "/tmp";      // where the snapshot is written (a disk, not tmpfs)
  int64_t system_prompts = 48;   // distinct shared prefixes
  int64_t system_tokens = 256;   // tokens of each
  int64_t own_tokens = 64;       // tokens of each request after its prefix
  int64_t warm_requests = 1024;  // before the restart (fills the pool)
  int64_t after_requests = 256;  // whose hit rate is measured after it
  uint64_t seed = 0;
};

// Runs it and prints the table (Markdown) on stdout. Returns the process's
// exit code: 0, or 1 after a line on stderr.
int RunSnapshotBench(const SnapshotBenchOptions& options);

}  // namespace nanoserve

#endif  // NANOSERVE_BENCH_SNAPSHOT_BENCH_H_
