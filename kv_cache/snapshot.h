// A PrefixCache's cached prefixes (its tree and their pages) saved to a file
// and loaded into a fresh cache: the KV store's warm restart (the store
// saves on a graceful stop and loads at start, docs/services.md).
//
// What is kept: every cached path (its namespace, tokens and page
// contents), in least recently used order, so that eviction after a load
// takes what it would have taken before. What is not: leases and pins (their
// holders were clients of the old process), caller-held and reserved pages,
// statistics.
//
// The file, format version 1 (host byte order: little-endian on every host
// nanoserve builds for):
//   header  "NSKVSNAP", the version, the model fingerprint (an opaque string
//           naming the weights the K/V came from), the page layout (sizes,
//           dtype, bytes per page), the counts and sizes of the sections
//           below, the index's CRC-32C, and the header's own CRC-32C;
//   index   per path, oldest first: its namespace, its tokens, its pages as
//           indices into the page section (paths that share a prefix share
//           those indices); then one CRC-32C per page;
//   pages   page after page, in the layout of page_layout.h.
// Every size is bounded before anything is allocated from it, and the file's
// length must be exactly what the header says.
//
// Thread safety: the functions are thread-safe with respect to each other,
// but each REQUIRES that nothing else allocates, inserts or evicts pages of
// `cache` meanwhile (pages read for a save must not be reused under it): the
// store saves after its server stopped and loads before it starts serving.
#ifndef NANOSERVE_KV_CACHE_SNAPSHOT_H_
#define NANOSERVE_KV_CACHE_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kv_cache/prefix_cache.h"

namespace nanoserve {

// The snapshot's file in a snapshot directory; Save writes kSnapshotFile
// plus ".tmp" first.
inline constexpr char kSnapshotFile[] = "kv_store.snapshot";
// The longest model fingerprint a snapshot holds, in bytes.
inline constexpr int64_t kMaxFingerprintBytes = 4096;

struct SnapshotStats {
  int64_t paths = 0;          // root-to-leaf paths saved or loaded
  int64_t pages = 0;          // distinct pages saved or loaded
  int64_t tokens = 0;         // cached tokens (pages * page_size)
  int64_t file_bytes = 0;     // the file's size
  int64_t skipped_paths = 0;  // Load: paths that did not fit the pool
  absl::Duration elapsed;     // wall time of the call
};

// Writes every cached path of `cache` and its pages to `path`, stamped with
// `model_fingerprint`: first to `path` + ".tmp", then fsync, a rename over
// `path` and an fsync of its directory, so that a crash mid-save leaves the
// previous snapshot (or none), never a torn one. An empty cache writes a
// snapshot of no paths. INVALID_ARGUMENT for a fingerprint over
// kMaxFingerprintBytes; the OS's errors (e.g. no space) as INTERNAL or
// RESOURCE_EXHAUSTED naming the file, with the temporary file removed.
absl::StatusOr<SnapshotStats> SaveSnapshot(const PrefixCache& cache, const std::string& path,
                                           absl::string_view model_fingerprint);

// Loads the snapshot at `path` into `cache`, which must hold nothing (no
// cached or caller-held pages, no leases: FAILED_PRECONDITION otherwise).
// Where the pool has fewer pages than the snapshot, the most recently used
// paths that fit are loaded and the rest counted in skipped_paths. The
// loaded paths are unpinned and in the saved LRU order. All or nothing: on
// any error the cache holds nothing again, and:
//   NOT_FOUND            no file at `path`;
//   FAILED_PRECONDITION  another format version, model fingerprint or page
//                        layout than `cache`'s (the message names both);
//   DATA_LOSS            a file that is truncated, too long, or whose
//                        header, index or a page fails its CRC or bounds.
absl::StatusOr<SnapshotStats> LoadSnapshot(PrefixCache* cache, const std::string& path,
                                           absl::string_view model_fingerprint);

// CRC-32C (Castagnoli) of `n` bytes, continuing `crc` (0 to start): the
// snapshot's checksums. SSE 4.2's instruction where the CPU has it, a table
// elsewhere; the same values either way.
uint32_t Crc32c(uint32_t crc, const void* data, size_t n);

}  // namespace nanoserve

#endif  // NANOSERVE_KV_CACHE_SNAPSHOT_H_
