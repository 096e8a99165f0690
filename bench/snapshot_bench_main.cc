// nanoserve-snapshot-bench: the KV store's warm restart measured
// (bench/snapshot_bench.h). Example:
//   build/bin/nanoserve-snapshot-bench --pool_mb=1024 --dir=/var/tmp
#include <cstdint>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "bench/snapshot_bench.h"

ABSL_FLAG(std::string, model, "random:gpt2", "the model whose page layout the pool has");
ABSL_FLAG(std::string, dtype, "fp32", "fp32, bf16 or fp16");
ABSL_FLAG(int64_t, page_size, 16, "tokens per page");
ABSL_FLAG(int64_t, pool_mb, 1024, "the pool's budget in MiB (what is saved, once full)");
ABSL_FLAG(std::string, dir, "/tmp", "where the snapshot is written (put it on a disk)");
ABSL_FLAG(int64_t, system_prompts, 48, "distinct shared prefixes of the workload");
ABSL_FLAG(int64_t, system_tokens, 256, "tokens of each shared prefix");
ABSL_FLAG(int64_t, own_tokens, 64, "tokens of each request after its prefix");
ABSL_FLAG(int64_t, warm_requests, 1024, "requests before the restart");
ABSL_FLAG(int64_t, after_requests, 256, "requests whose hit rate is measured after it");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("measures the KV store's snapshot save, load and hit rate");
  absl::ParseCommandLine(argc, argv);
  nanoserve::SnapshotBenchOptions o;
  o.model = absl::GetFlag(FLAGS_model);
  o.dtype = absl::GetFlag(FLAGS_dtype);
  o.page_size = absl::GetFlag(FLAGS_page_size);
  o.pool_mb = absl::GetFlag(FLAGS_pool_mb);
  o.dir = absl::GetFlag(FLAGS_dir);
  o.system_prompts = absl::GetFlag(FLAGS_system_prompts);
  o.system_tokens = absl::GetFlag(FLAGS_system_tokens);
  o.own_tokens = absl::GetFlag(FLAGS_own_tokens);
  o.warm_requests = absl::GetFlag(FLAGS_warm_requests);
  o.after_requests = absl::GetFlag(FLAGS_after_requests);
  return nanoserve::RunSnapshotBench(o);
}
