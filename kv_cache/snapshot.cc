#include "kv_cache/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kv_cache/page_layout.h"

namespace nanoserve {
namespace {

constexpr char kSnapshotMagic[8] = {'N', 'S', 'K', 'V', 'S', 'N', 'A', 'P'};
constexpr uint32_t kVersion = 1;
// Far above any real index (a token costs 4 bytes, a page a few more).
constexpr int64_t kMaxIndexBytes = int64_t{1} << 30;
// Pages moved per device copy when the pool is not host memory.
constexpr int64_t kStagedPages = 32;

// The header's fixed part, as written; the fingerprint's bytes and the
// header's CRC-32C (of this and the fingerprint) follow it.
struct FixedHeader {
  char magic[8];
  uint32_t version;
  uint32_t fingerprint_bytes;
  int64_t n_layer, n_head, head_dim, page_size;
  char dtype[16];  // c10::toString of the dtype, zero padded
  int64_t bytes_per_page;
  int64_t num_paths;
  int64_t num_pages;
  int64_t index_bytes;
  uint32_t index_crc;
  uint32_t reserved;  // 0
};
static_assert(sizeof(FixedHeader) == 104, "FixedHeader must have no padding");

// CRC-32C a byte at a time from a table: where the CPU has no instruction.
uint32_t Crc32cPortable(uint32_t crc, const unsigned char* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
// CRC-32C with SSE 4.2's crc32 instruction, 8 bytes at a time (about 20x the
// table's speed: what makes a snapshot's save and load run at disk speed).
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(uint32_t crc, const unsigned char* p,
                                                       size_t n) {
  uint64_t c = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; n > 0; ++p, --n) c32 = _mm_crc32_u8(c32, *p);
  return ~c32;
}
#endif

uint32_t Crc(uint32_t crc, const void* data, size_t n) { return Crc32c(crc, data, n); }

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  const int err = errno;
  const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

// A file descriptor, closed when it goes; positioned reads and writes of
// whole buffers.
class File {
 public:
  File(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~File() {
    if (fd_ >= 0) close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  absl::Status Write(int64_t offset, const void* data, int64_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t done = pwrite(fd_, p, static_cast<size_t>(n), offset);
      if (done < 0 && errno == EINTR) continue;
      if (done <= 0) return ErrnoError("writing", path_);
      p += done, offset += done, n -= done;
    }
    return absl::OkStatus();
  }
  // DATA_LOSS where the file ends first.
  absl::Status Read(int64_t offset, void* data, int64_t n) {
    char* p = static_cast<char*>(data);
    while (n > 0) {
      const ssize_t done = pread(fd_, p, static_cast<size_t>(n), offset);
      if (done < 0 && errno == EINTR) continue;
      if (done < 0) return ErrnoError("reading", path_);
      if (done == 0) return absl::DataLossError(absl::StrCat(path_, " ends early"));
      p += done, offset += done, n -= done;
    }
    return absl::OkStatus();
  }
  absl::Status Sync() { return fsync(fd_) == 0 ? absl::OkStatus() : ErrnoError("syncing", path_); }
  absl::StatusOr<int64_t> Size() {
    struct stat st;
    if (fstat(fd_, &st) != 0) return ErrnoError("reading the size of", path_);
    return static_cast<int64_t>(st.st_size);
  }

 private:
  int fd_;
  std::string path_;
};

std::string DtypeName(torch::Dtype dtype) { return std::string(c10::toString(dtype)); }

FixedHeader HeaderOf(const PageLayout& layout, absl::string_view fingerprint) {
  FixedHeader h;
  std::memset(&h, 0, sizeof(h));
  std::memcpy(h.magic, kSnapshotMagic, sizeof(kSnapshotMagic));
  h.version = kVersion;
  h.fingerprint_bytes = static_cast<uint32_t>(fingerprint.size());
  h.n_layer = layout.n_layer;
  h.n_head = layout.n_head;
  h.head_dim = layout.head_dim;
  h.page_size = layout.page_size;
  const std::string dtype = DtypeName(layout.dtype);
  std::memcpy(h.dtype, dtype.data(), std::min(dtype.size(), sizeof(h.dtype) - 1));
  h.bytes_per_page = layout.bytes_per_page();
  return h;
}

int64_t HeaderBytes(const FixedHeader& h) {
  return static_cast<int64_t>(sizeof(FixedHeader)) + h.fingerprint_bytes + 4;
}

// ---- the index ----

template <typename T>
void Append(std::string* out, const T& value) {
  out->append(reinterpret_cast<const char*>(&value), sizeof(T));
}
template <typename T>
void AppendAll(std::string* out, const std::vector<T>& values) {
  out->append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// The snapshot's pages, numbered in order of first appearance along the
// paths, and the paths' entries of the index (without the page CRCs).
struct SavePlan {
  std::vector<int32_t> pool_pages;  // snapshot page i is pool page pool_pages[i]
  std::string paths_index;
};

SavePlan PlanSave(const std::vector<CachedPath>& paths, int64_t pool_pages) {
  SavePlan plan;
  std::vector<int32_t> snapshot_index(static_cast<size_t>(pool_pages), -1);
  for (const CachedPath& path : paths) {
    Append(&plan.paths_index, static_cast<uint32_t>(path.cache_salt.size()));
    plan.paths_index.append(path.cache_salt);
    Append(&plan.paths_index, static_cast<uint32_t>(path.pages.size()));
    AppendAll(&plan.paths_index, path.tokens);
    for (int32_t page : path.pages) {
      if (snapshot_index[page] < 0) {
        snapshot_index[page] = static_cast<int32_t>(plan.pool_pages.size());
        plan.pool_pages.push_back(page);
      }
      Append(&plan.paths_index, static_cast<uint32_t>(snapshot_index[page]));
    }
  }
  return plan;
}

struct SnapshotPath {
  std::string cache_salt;
  std::vector<int32_t> tokens;
  std::vector<uint32_t> pages;  // snapshot page indices
};

struct Index {
  std::vector<SnapshotPath> paths;  // oldest first
  std::vector<uint32_t> page_crcs;
};

// Reads from a buffer, never past its end.
class Cursor {
 public:
  explicit Cursor(absl::string_view data) : rest_(data) {}
  bool Take(void* out, size_t n) {
    if (n > rest_.size()) return false;
    if (n > 0) std::memcpy(out, rest_.data(), n);
    rest_.remove_prefix(n);
    return true;
  }
  template <typename T>
  bool TakeAll(std::vector<T>* out, size_t count) {
    if (count > rest_.size() / sizeof(T)) return false;
    out->resize(count);
    return Take(out->data(), count * sizeof(T));
  }
  bool done() const { return rest_.empty(); }

 private:
  absl::string_view rest_;
};

absl::StatusOr<Index> ParseIndex(absl::string_view data, const FixedHeader& h) {
  const auto corrupt = [](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("snapshot index: ", what));
  };
  Cursor cursor(data);
  Index index;
  index.paths.resize(static_cast<size_t>(h.num_paths));
  for (SnapshotPath& path : index.paths) {
    uint32_t salt_bytes = 0, n_pages = 0;
    if (!cursor.Take(&salt_bytes, 4) || salt_bytes > kMaxCacheSaltBytes) return corrupt("a salt");
    path.cache_salt.resize(salt_bytes);
    if (!cursor.Take(path.cache_salt.data(), salt_bytes)) return corrupt("a salt");
    if (!cursor.Take(&n_pages, 4) || n_pages < 1 || n_pages > h.num_pages) {
      return corrupt("a path's page count");
    }
    if (!cursor.TakeAll(&path.tokens, n_pages * static_cast<size_t>(h.page_size)) ||
        !cursor.TakeAll(&path.pages, n_pages)) {
      return corrupt("a path runs past the index");
    }
    for (uint32_t page : path.pages) {
      if (page >= h.num_pages) return corrupt("a page index out of range");
    }
  }
  if (!cursor.TakeAll(&index.page_crcs, static_cast<size_t>(h.num_pages)) || !cursor.done()) {
    return corrupt("the page CRCs");
  }
  return index;
}

// ---- pages ----

// Calls visit(i, bytes of pool page pages[i]) for each i in order: straight
// from a host pool, in staged runs from a device pool.
absl::Status VisitPoolPages(const torch::Tensor& pool, absl::Span<const int32_t> pages,
                            int64_t bytes_per_page,
                            const std::function<absl::Status(int64_t, const char*)>& visit) {
  if (pool.device().is_cpu() && pool.is_contiguous()) {
    const char* base = static_cast<const char*>(pool.data_ptr());
    for (size_t i = 0; i < pages.size(); ++i) {
      if (absl::Status s = visit(i, base + pages[i] * bytes_per_page); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  for (size_t at = 0; at < pages.size(); at += kStagedPages) {
    const auto run = pages.subspan(at, kStagedPages);
    absl::StatusOr<torch::Tensor> staged = ReadPages(pool, run, torch::kCPU);
    if (!staged.ok()) return staged.status();
    const char* base = static_cast<const char*>(staged->data_ptr());
    for (size_t i = 0; i < run.size(); ++i) {
      if (absl::Status s = visit(at + i, base + i * bytes_per_page); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

// Fills pool page pages[i] through fill(i, its buffer) for each i: in place
// in a host pool, staged and copied to a device pool.
absl::Status FillPoolPages(const torch::Tensor& pool, const PageLayout& layout,
                           absl::Span<const int32_t> pages,
                           const std::function<absl::Status(int64_t, char*)>& fill) {
  const int64_t bytes_per_page = layout.bytes_per_page();
  if (pool.device().is_cpu() && pool.is_contiguous()) {
    char* base = static_cast<char*>(pool.data_ptr());
    for (size_t i = 0; i < pages.size(); ++i) {
      if (absl::Status s = fill(i, base + pages[i] * bytes_per_page); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  for (size_t at = 0; at < pages.size(); at += kStagedPages) {
    const auto run = pages.subspan(at, kStagedPages);
    absl::StatusOr<torch::Tensor> staged = EmptyPages(layout, run.size(), torch::kCPU);
    if (!staged.ok()) return staged.status();
    char* base = static_cast<char*>(staged->data_ptr());
    for (size_t i = 0; i < run.size(); ++i) {
      if (absl::Status s = fill(at + i, base + i * bytes_per_page); !s.ok()) return s;
    }
    if (absl::Status s = WritePages(pool, run, *staged); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// ---- save ----

absl::Status WriteSnapshot(File& file, const PrefixCache& cache, const PageLayout& layout,
                           absl::string_view fingerprint, SnapshotStats* stats) {
  const std::vector<CachedPath> paths = cache.DumpPaths();
  SavePlan plan = PlanSave(paths, cache.num_pages());
  FixedHeader h = HeaderOf(layout, fingerprint);
  h.num_paths = static_cast<int64_t>(paths.size());
  h.num_pages = static_cast<int64_t>(plan.pool_pages.size());
  h.index_bytes = static_cast<int64_t>(plan.paths_index.size()) + 4 * h.num_pages;
  const int64_t pages_at = HeaderBytes(h) + h.index_bytes;
  // The pages first, so that their CRCs are known when the index is written.
  std::vector<uint32_t> page_crcs(static_cast<size_t>(h.num_pages));
  absl::Status written = VisitPoolPages(
      cache.storage(), plan.pool_pages, h.bytes_per_page, [&](int64_t i, const char* bytes) {
        page_crcs[i] = Crc(0, bytes, h.bytes_per_page);
        return file.Write(pages_at + i * h.bytes_per_page, bytes, h.bytes_per_page);
      });
  if (!written.ok()) return written;
  std::string index = std::move(plan.paths_index);
  AppendAll(&index, page_crcs);
  h.index_crc = Crc(0, index.data(), index.size());
  std::string header(reinterpret_cast<const char*>(&h), sizeof(h));
  header.append(fingerprint.data(), fingerprint.size());
  Append(&header, Crc(0, header.data(), header.size()));
  if (absl::Status s = file.Write(HeaderBytes(h), index.data(), h.index_bytes); !s.ok()) return s;
  if (absl::Status s = file.Write(0, header.data(), header.size()); !s.ok()) return s;
  stats->paths = h.num_paths;
  stats->pages = h.num_pages;
  stats->tokens = h.num_pages * layout.page_size;
  stats->file_bytes = pages_at + h.num_pages * h.bytes_per_page;
  return file.Sync();
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// ---- load ----

absl::StatusOr<FixedHeader> ReadHeader(File& file, int64_t file_bytes,
                                       absl::string_view fingerprint) {
  FixedHeader h;
  if (file_bytes < static_cast<int64_t>(sizeof(h))) {
    return absl::DataLossError(absl::StrCat("snapshot of ", file_bytes, " bytes has no header"));
  }
  if (absl::Status s = file.Read(0, &h, sizeof(h)); !s.ok()) return s;
  if (std::memcmp(h.magic, kSnapshotMagic, sizeof(kSnapshotMagic)) != 0) {
    return absl::DataLossError("not a KV store snapshot (bad magic)");
  }
  if (h.version != kVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot format version ", h.version, ", this build reads ", kVersion));
  }
  if (h.fingerprint_bytes > kMaxFingerprintBytes || HeaderBytes(h) > file_bytes) {
    return absl::DataLossError("snapshot header: fingerprint length out of bounds");
  }
  std::string header(reinterpret_cast<const char*>(&h), sizeof(h));
  header.resize(HeaderBytes(h));
  if (absl::Status s = file.Read(sizeof(h), header.data() + sizeof(h), header.size() - sizeof(h));
      !s.ok()) {
    return s;
  }
  uint32_t crc;
  std::memcpy(&crc, header.data() + header.size() - 4, 4);
  if (crc != Crc(0, header.data(), header.size() - 4)) {
    return absl::DataLossError("snapshot header fails its CRC");
  }
  const absl::string_view saved(header.data() + sizeof(h), h.fingerprint_bytes);
  if (saved != fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot of model '", saved, "', this store serves '", fingerprint, "'"));
  }
  return h;
}

// The header's layout and sizes against the cache's layout and the file.
absl::Status CheckHeader(const FixedHeader& h, const PageLayout& layout, int64_t file_bytes) {
  const FixedHeader want = HeaderOf(layout, "");
  if (h.n_layer != want.n_layer || h.n_head != want.n_head || h.head_dim != want.head_dim ||
      h.page_size != want.page_size || std::memcmp(h.dtype, want.dtype, sizeof(h.dtype)) != 0 ||
      h.bytes_per_page != want.bytes_per_page) {
    std::string dtype(h.dtype, strnlen(h.dtype, sizeof(h.dtype)));
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot of page layout {", dtype, ", n_layer ", h.n_layer, ", n_head ",
                     h.n_head, ", head_dim ", h.head_dim, ", page_size ", h.page_size,
                     "}, this store's is ", layout.ToString()));
  }
  const int64_t body = file_bytes - HeaderBytes(h);
  if (h.num_pages < 0 || h.num_pages > std::numeric_limits<int32_t>::max() || h.num_paths < 0 ||
      h.num_paths > h.num_pages || h.index_bytes < 4 * h.num_pages ||
      h.index_bytes > std::min(kMaxIndexBytes, body) ||
      (body - h.index_bytes) / h.bytes_per_page < h.num_pages) {
    return absl::DataLossError(
        absl::StrCat("snapshot of ", file_bytes, " bytes is truncated or its counts are corrupt"));
  }
  if (body - h.index_bytes != h.num_pages * h.bytes_per_page) {
    return absl::DataLossError(
        absl::StrCat("snapshot of ", file_bytes, " bytes is longer than its header says"));
  }
  return absl::OkStatus();
}

// Which paths to load into `free_pages` pages: the most recently used that
// fit. Returns their indices oldest first, and the pages they use.
struct Selection {
  std::vector<size_t> paths;    // oldest first
  std::vector<uint32_t> pages;  // ascending (file order)
  int64_t skipped_paths = 0;
};

Selection SelectPaths(const Index& index, int64_t num_pages, int64_t free_pages) {
  Selection selection;
  std::vector<uint8_t> chosen(static_cast<size_t>(num_pages), 0);
  int64_t used = 0;
  for (size_t i = index.paths.size(); i-- > 0;) {
    std::vector<uint32_t> fresh;
    for (uint32_t page : index.paths[i].pages) {
      if (chosen[page] == 0) {  // 2: taken by this path if it fits
        chosen[page] = 2;
        fresh.push_back(page);
      }
    }
    const bool fits = used + static_cast<int64_t>(fresh.size()) <= free_pages;
    for (uint32_t page : fresh) chosen[page] = fits ? 1 : 0;
    if (!fits) {
      ++selection.skipped_paths;
      continue;
    }
    used += static_cast<int64_t>(fresh.size());
    selection.paths.push_back(i);
  }
  std::reverse(selection.paths.begin(), selection.paths.end());
  for (int64_t page = 0; page < num_pages; ++page) {
    if (chosen[page] == 1) selection.pages.push_back(static_cast<uint32_t>(page));
  }
  return selection;
}

// Reads the selected pages into `pool_pages` (selection.pages[i] into
// pool_pages[i]), checking each page's CRC.
absl::Status ReadSelectedPages(File& file, const FixedHeader& h, const Index& index,
                               const Selection& selection, const PrefixCache& cache,
                               absl::Span<const int32_t> pool_pages) {
  const int64_t pages_at = HeaderBytes(h) + h.index_bytes;
  return FillPoolPages(
      cache.storage(), cache.options().pool.layout, pool_pages, [&](int64_t i, char* out) {
        const uint32_t page = selection.pages[i];
        if (absl::Status s = file.Read(pages_at + page * h.bytes_per_page, out, h.bytes_per_page);
            !s.ok()) {
          return s;
        }
        if (Crc(0, out, h.bytes_per_page) != index.page_crcs[page]) {
          return absl::DataLossError(absl::StrCat("snapshot page ", page, " fails its CRC"));
        }
        return absl::OkStatus();
      });
}

// Inserts the selected paths, oldest first, over the pages just read
// (`pool_page[snapshot page]`), and releases each insert's lease.
absl::Status InsertPaths(PrefixCache* cache, const Index& index, const Selection& selection,
                         const std::vector<int32_t>& pool_page) {
  for (size_t i : selection.paths) {
    const SnapshotPath& path = index.paths[i];
    std::vector<int32_t> pages;
    pages.reserve(path.pages.size());
    for (uint32_t page : path.pages) pages.push_back(pool_page[page]);
    auto inserted = cache->Insert(path.tokens, pages, path.cache_salt);
    if (!inserted.ok()) {
      return absl::DataLossError(absl::StrCat(
          "snapshot path ", i, " does not fit the tree: ", inserted.status().message()));
    }
    if (absl::Status s = cache->Release(inserted->lease_id); !s.ok()) return s;
  }
  const PrefixCacheStats stats = cache->Stats();
  if (stats.pages_in_use != stats.pages_cached) {
    return absl::DataLossError("snapshot paths left pages outside the tree");
  }
  return absl::OkStatus();
}

absl::Status LoadInto(PrefixCache* cache, File& file, int64_t file_bytes,
                      absl::string_view fingerprint, SnapshotStats* stats) {
  const PageLayout& layout = cache->options().pool.layout;
  absl::StatusOr<FixedHeader> h = ReadHeader(file, file_bytes, fingerprint);
  if (!h.ok()) return h.status();
  if (absl::Status s = CheckHeader(*h, layout, file_bytes); !s.ok()) return s;
  std::string raw(static_cast<size_t>(h->index_bytes), '\0');
  if (absl::Status s = file.Read(HeaderBytes(*h), raw.data(), h->index_bytes); !s.ok()) return s;
  if (Crc(0, raw.data(), raw.size()) != h->index_crc) {
    return absl::DataLossError("snapshot index fails its CRC");
  }
  absl::StatusOr<Index> index = ParseIndex(raw, *h);
  if (!index.ok()) return index.status();
  const Selection selection = SelectPaths(*index, h->num_pages, cache->Stats().pages_free);
  absl::StatusOr<std::vector<int32_t>> allocated = cache->AllocatePages(selection.pages.size());
  if (!allocated.ok()) return allocated.status();
  std::vector<int32_t> pool_page(static_cast<size_t>(h->num_pages), -1);
  for (size_t i = 0; i < selection.pages.size(); ++i) {
    pool_page[selection.pages[i]] = (*allocated)[i];
  }
  absl::Status loaded = ReadSelectedPages(file, *h, *index, selection, *cache, *allocated);
  if (loaded.ok()) loaded = InsertPaths(cache, *index, selection, pool_page);
  if (!loaded.ok()) {
    cache->EvictAll();  // nothing is pinned: every insert's lease was released
    for (int32_t page : *allocated) cache->FreePages({page}).IgnoreError();  // the rest
    return loaded;
  }
  stats->paths = static_cast<int64_t>(selection.paths.size());
  stats->skipped_paths = selection.skipped_paths;
  stats->pages = cache->Stats().pages_cached;
  stats->tokens = stats->pages * layout.page_size;
  stats->file_bytes = file_bytes;
  return absl::OkStatus();
}

}  // namespace

uint32_t Crc32c(uint32_t crc, const void* data, size_t n) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
#if defined(__x86_64__)
  static const bool sse42 = __builtin_cpu_supports("sse4.2");
  if (sse42) return Crc32cSse42(crc, p, n);
#endif
  return Crc32cPortable(crc, p, n);
}

absl::StatusOr<SnapshotStats> SaveSnapshot(const PrefixCache& cache, const std::string& path,
                                           absl::string_view model_fingerprint) {
  const absl::Time start = absl::Now();
  if (static_cast<int64_t>(model_fingerprint.size()) > kMaxFingerprintBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a model fingerprint of ",
                                                   model_fingerprint.size(), " bytes is over ",
                                                   kMaxFingerprintBytes));
  }
  const std::string temp = path + ".tmp";
  SnapshotStats stats;
  {
    const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoError("creating", temp);
    File file(fd, temp);
    absl::Status written =
        WriteSnapshot(file, cache, cache.options().pool.layout, model_fingerprint, &stats);
    if (!written.ok()) {
      unlink(temp.c_str());
      return written;
    }
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    absl::Status renamed = ErrnoError("renaming the snapshot to", path);
    unlink(temp.c_str());
    return renamed;
  }
  const std::string dir = DirectoryOf(path);
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return ErrnoError("opening", dir);
  File directory(dir_fd, dir);  // the rename is durable once it is synced
  if (absl::Status s = directory.Sync(); !s.ok()) return s;
  stats.elapsed = absl::Now() - start;
  return stats;
}

absl::StatusOr<SnapshotStats> LoadSnapshot(PrefixCache* cache, const std::string& path,
                                           absl::string_view model_fingerprint) {
  const absl::Time start = absl::Now();
  const PrefixCacheStats before = cache->Stats();
  if (before.pages_in_use != 0 || before.active_leases != 0) {
    return absl::FailedPreconditionError("LoadSnapshot: the cache is not empty");
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("opening", path);
  File file(fd, path);
  absl::StatusOr<int64_t> file_bytes = file.Size();
  if (!file_bytes.ok()) return file_bytes.status();
  SnapshotStats stats;
  if (absl::Status s = LoadInto(cache, file, *file_bytes, model_fingerprint, &stats); !s.ok()) {
    return s;
  }
  stats.elapsed = absl::Now() - start;
  return stats;
}

}  // namespace nanoserve
