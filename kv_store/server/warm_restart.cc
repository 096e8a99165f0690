#include "kv_store/server/warm_restart.h"

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "absl/time/time.h"

namespace nanoserve {
namespace {

std::string SnapshotPath(const WarmRestartOptions& options) {
  return options.snapshot_dir + "/" + kSnapshotFile;
}

double MiB(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace

SnapshotStats LoadAtStart(PrefixCache* cache, const WarmRestartOptions& options) {
  const char* name = options.log_name.c_str();
  std::error_code error;
  std::filesystem::create_directories(options.snapshot_dir, error);
  if (error) {
    std::fprintf(stderr, "%s: cold start: cannot create --snapshot_dir %s: %s\n", name,
                 options.snapshot_dir.c_str(), error.message().c_str());
    return {};
  }
  const std::string path = SnapshotPath(options);
  absl::StatusOr<SnapshotStats> loaded = LoadSnapshot(cache, path, options.model_fingerprint);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s: cold start: %s: %s\n", name, path.c_str(),
                 loaded.status().code() == absl::StatusCode::kNotFound
                     ? "no snapshot"
                     : loaded.status().ToString().c_str());
    return {};
  }
  std::fprintf(stderr,
               "%s: warm start: %lld prefixes, %lld tokens in %lld pages (%.1f MiB) loaded from "
               "%s in %.0f ms%s\n",
               name, static_cast<long long>(loaded->paths), static_cast<long long>(loaded->tokens),
               static_cast<long long>(loaded->pages), MiB(loaded->file_bytes), path.c_str(),
               absl::ToDoubleMilliseconds(loaded->elapsed),
               loaded->skipped_paths > 0 ? " (the oldest did not fit the pool)" : "");
  return *loaded;
}

void AddSnapshotMetrics(const SnapshotStats& loaded, MetricsRegistry* metrics) {
  const double seconds = absl::ToDoubleSeconds(loaded.elapsed);
  const double pages = static_cast<double>(loaded.pages);
  const double tokens = static_cast<double>(loaded.tokens);
  metrics->AddGauge("nanoserve_kv_store_snapshot_load_seconds",
                    "Wall time of loading the snapshot at start (0: a cold start).",
                    [seconds] { return seconds; });
  metrics->AddGauge("nanoserve_kv_store_snapshot_pages_loaded",
                    "Pages the snapshot loaded at start put in the pool.",
                    [pages] { return pages; });
  metrics->AddGauge("nanoserve_kv_store_snapshot_tokens_loaded",
                    "Cached tokens in the pages loaded from the snapshot at start.",
                    [tokens] { return tokens; });
}

absl::Status SaveAtStop(const PrefixCache& cache, const WarmRestartOptions& options) {
  const std::string path = SnapshotPath(options);
  absl::StatusOr<SnapshotStats> saved = SaveSnapshot(cache, path, options.model_fingerprint);
  if (!saved.ok()) {
    std::fprintf(stderr, "%s: snapshot not saved (the next start is cold): %s\n",
                 options.log_name.c_str(), saved.status().ToString().c_str());
    return saved.status();
  }
  std::fprintf(stderr,
               "%s: snapshot saved: %lld prefixes, %lld tokens in %lld pages (%.1f MiB) to %s in "
               "%.0f ms\n",
               options.log_name.c_str(), static_cast<long long>(saved->paths),
               static_cast<long long>(saved->tokens), static_cast<long long>(saved->pages),
               MiB(saved->file_bytes), path.c_str(), absl::ToDoubleMilliseconds(saved->elapsed));
  return absl::OkStatus();
}

}  // namespace nanoserve
