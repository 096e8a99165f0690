#include "bench/snapshot_bench.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <random>
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

// The hit rate (matched / prompt tokens) of `requests` against `cache`.
absl::StatusOr<double> HitRate(PrefixCache& cache, const std::vector<Tokens>& requests) {
  int64_t hit = 0, total = 0;
  for (const Tokens& tokens : requests) {
    auto matched = Serve(cache, tokens);
    if (!matched.ok()) return matched.status();
    hit += *matched;
    total += static_cast<int64_t>(tokens.size());
  }
  return total > 0 ? static_cast<double>(hit) / total : 0.0;
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

std::string Timing(const SnapshotStats& stats) {
  const double s = absl::ToDoubleSeconds(stats.elapsed);
  return absl::StrFormat("%.0f ms (%.2f GB/s)", s * 1e3, stats.file_bytes / s / 1e9);
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
  auto saved = SaveSnapshot(**before, path, kFingerprint);
  if (!saved.ok()) return saved.status();
  DropFromPageCache(path);
  SnapshotStats from_disk, from_page_cache;
  std::unique_ptr<PrefixCache> warm;
  for (SnapshotStats* stats : {&from_disk, &from_page_cache}) {
    auto cache = NewCache(o);
    if (!cache.ok()) return cache.status();
    warm = *std::move(cache);  // the second load's is kept
    auto loaded = LoadSnapshot(warm.get(), path, kFingerprint);
    if (!loaded.ok()) return loaded.status();
    *stats = *loaded;
  }
  unlink(path.c_str());
  auto cold = NewCache(o);
  if (!cold.ok()) return cold.status();
  absl::StatusOr<double> rates[3] = {HitRate(**before, after), HitRate(*warm, after),
                                     HitRate(**cold, after)};
  for (const auto& rate : rates) {
    if (!rate.ok()) return rate.status();
  }
  const PageLayout& layout = (*before)->options().pool.layout;
  std::printf("| %s, page %lld, pool %lld MiB (%lld pages) | |\n| --- | --- |\n",
              layout.ToString().c_str(), static_cast<long long>(o.page_size),
              static_cast<long long>(o.pool_mb), static_cast<long long>((*before)->num_pages()));
  PrintRow("snapshot", absl::StrFormat("%d prefixes, %d pages, %.1f MiB", saved->paths,
                                       saved->pages, saved->file_bytes / 1048576.0));
  PrintRow("save (write, fsync, rename)", Timing(*saved));
  PrintRow("load, file not in the page cache", Timing(from_disk));
  PrintRow("load, file in the page cache", Timing(from_page_cache));
  const std::string window = absl::StrFormat("hit rate of the next %d requests", o.after_requests);
  PrintRow((window + ", no restart").c_str(), absl::StrFormat("%.1f %%", 100 * *rates[0]));
  PrintRow((window + ", warm restart").c_str(), absl::StrFormat("%.1f %%", 100 * *rates[1]));
  PrintRow((window + ", cold restart").c_str(), absl::StrFormat("%.1f %%", 100 * *rates[2]));
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
