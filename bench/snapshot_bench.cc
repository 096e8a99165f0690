#include "bench/snapshot_bench.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "base/dtype.h"
#include "engine/kv_cache.h"
#include "engine/model_loader.h"
#include "kv_cache/prefix_cache.h"
#include "kv_cache/snapshot.h"

namespace nanoserve {
namespace {

constexpr char kFingerprint[] = "nanoserve-snapshot-bench";

using Tokens = std::vector<int32_t>;

// Requests: one of the shared system prompts, then tokens of its own.
class Workload {
 public:
  explicit Workload(const SnapshotBenchOptions& o) : o_(o), rng_(o.seed) {}
  Tokens Next() {
    const int64_t prompt = std::uniform_int_distribution<int64_t>(0, o_.system_prompts - 1)(rng_);
    Tokens tokens;
    for (int64_t i = 0; i < o_.system_tokens; ++i) {
      tokens.push_back(static_cast<int32_t>((prompt * 7919 + i * 31) % 50257));
    }
    std::uniform_int_distribution<int32_t> token(0, 50256);
    for (int64_t i = 0; i < o_.own_tokens; ++i) tokens.push_back(token(rng_));
    return tokens;
  }

 private:
  const SnapshotBenchOptions& o_;
  std::mt19937_64 rng_;
};

// What a prefill does to the store for one request: match, then cache the
// request's whole pages. Returns the matched tokens.
absl::StatusOr<int64_t> Serve(PrefixCache& cache, const Tokens& tokens) {
  PrefixCache::MatchResult m = cache.Match(tokens);
  const int64_t ps = cache.page_size();
  const int64_t full = static_cast<int64_t>(tokens.size()) / ps * ps;
  auto fresh = cache.AllocatePages(full / ps - static_cast<int64_t>(m.pages.size()));
  if (!fresh.ok()) return fresh.status();
  std::vector<int32_t> pages = m.pages;
  pages.insert(pages.end(), fresh->begin(), fresh->end());
  auto inserted = cache.Insert(Tokens(tokens.begin(), tokens.begin() + full), pages);
  if (!inserted.ok()) return inserted.status();
  if (absl::Status s = cache.Release(inserted->lease_id); !s.ok()) return s;
  if (absl::Status s = cache.Release(m.lease_id); !s.ok()) return s;
  return m.matched_tokens;
}

// The hit rates (matched / prompt tokens) of the first `first` of
// `requests` and of all of them, served in order against `cache`.
absl::StatusOr<std::pair<double, double>> HitRates(PrefixCache& cache,
                                                   const std::vector<Tokens>& requests,
                                                   size_t first) {
  int64_t hit = 0, total = 0;
  double first_rate = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto matched = Serve(cache, requests[i]);
    if (!matched.ok()) return matched.status();
    hit += *matched;
    total += static_cast<int64_t>(requests[i].size());
    if (i + 1 == first) first_rate = static_cast<double>(hit) / total;
  }
  return std::make_pair(first_rate, total > 0 ? static_cast<double>(hit) / total : 0.0);
}

// CPU seconds of this process so far (user + system, all threads).
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// Drops the file's pages from the page cache (they are clean after the
// save's fsync), so that the next read comes from the disk.
void DropFromPageCache(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

absl::StatusOr<std::unique_ptr<PrefixCache>> NewCache(const SnapshotBenchOptions& o) {
  auto config = LoadModelConfig(o.model);
  if (!config.ok()) return config.status();
  auto dtype = ParseDtype(o.dtype);
  if (!dtype.ok()) return dtype.status();
  PrefixCacheOptions options;
  options.pool.layout = KvPageLayout(*config, *dtype, o.page_size);
  options.pool.byte_budget = o.pool_mb << 20;
  return PrefixCache::Create(options);
}

void PrintRow(const char* what, const std::string& value) {
  std::printf("| %s | %s |\n", what, value.c_str());
}

// Wall time, rate and the CPU time the call took.
std::string Timing(const SnapshotStats& stats, double cpu_s) {
  const double s = absl::ToDoubleSeconds(stats.elapsed);
  return absl::StrFormat("%.0f ms (%.2f GB/s), CPU %.0f ms", s * 1e3, stats.file_bytes / s / 1e9,
                         cpu_s * 1e3);
}

absl::Status Run(const SnapshotBenchOptions& o) {
  auto before = NewCache(o);
  if (!before.ok()) return before.status();
  (*before)->storage().uniform_();  // pages of noise, not zeros
  Workload workload(o);
  for (int64_t i = 0; i < o.warm_requests; ++i) {
    if (absl::Status s = Serve(**before, workload.Next()).status(); !s.ok()) return s;
  }
  std::vector<Tokens> after;
  for (int64_t i = 0; i < o.after_requests; ++i) after.push_back(workload.Next());

  const std::string path = o.dir + "/nanoserve_snapshot_bench.snapshot";
  double cpu = CpuSeconds();
  auto saved = SaveSnapshot(**before, path, kFingerprint);
  if (!saved.ok()) return saved.status();
  const double save_cpu = CpuSeconds() - cpu;
  DropFromPageCache(path);
  SnapshotStats loads[2];  // from the disk, then from the page cache
  double load_cpu[2];
  std::unique_ptr<PrefixCache> warm;
  for (int i = 0; i < 2; ++i) {
    auto cache = NewCache(o);
    if (!cache.ok()) return cache.status();
    warm = *std::move(cache);  // the second load's is kept
    cpu = CpuSeconds();
    auto loaded = LoadSnapshot(warm.get(), path, kFingerprint);
    if (!loaded.ok()) return loaded.status();
    load_cpu[i] = CpuSeconds() - cpu;
    loads[i] = *loaded;
  }
  unlink(path.c_str());
  auto cold = NewCache(o);
  if (!cold.ok()) return cold.status();
  const size_t first = std::min<size_t>(32, after.size());
  absl::StatusOr<std::pair<double, double>> rates[3] = {HitRates(**before, after, first),
                                                        HitRates(*warm, after, first),
                                                        HitRates(**cold, after, first)};
  for (const auto& rate : rates) {
    if (!rate.ok()) return rate.status();
  }
  const PageLayout& layout = (*before)->options().pool.layout;
  std::printf("| %s, page %lld, pool %lld MiB (%lld pages) | |\n| --- | --- |\n",
              layout.ToString().c_str(), static_cast<long long>(o.page_size),
              static_cast<long long>(o.pool_mb), static_cast<long long>((*before)->num_pages()));
  PrintRow("snapshot", absl::StrFormat("%d prefixes, %d pages, %.1f MiB", saved->paths,
                                       saved->pages, saved->file_bytes / 1048576.0));
  PrintRow("save (write, fsync, rename)", Timing(*saved, save_cpu));
  PrintRow("load, file not in the page cache", Timing(loads[0], load_cpu[0]));
  PrintRow("load, file in the page cache", Timing(loads[1], load_cpu[1]));
  const char* names[3] = {"no restart", "warm restart", "cold restart"};
  for (int i = 0; i < 3; ++i) {
    PrintRow(
        absl::StrFormat("hit rate of the next %d / %d requests, %s", first, after.size(), names[i])
            .c_str(),
        absl::StrFormat("%.1f %% / %.1f %%", 100 * rates[i]->first, 100 * rates[i]->second));
  }
  return absl::OkStatus();
}

}  // namespace

int RunSnapshotBench(const SnapshotBenchOptions& options) {
  absl::Status status = Run(options);
  if (!status.ok()) {
    std::fprintf(stderr, "nanoserve-snapshot-bench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace nanoserve
