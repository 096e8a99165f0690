#include "kv_cache/page_layout.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/torch_status.h"
#include "kv_cache/shared_memory.h"

#ifdef NANOSERVE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kv_cache/page_copy_cuda.h"
#endif

namespace nanoserve {
namespace {

constexpr int64_t kMaxDim = 65536;
// Four sizes of up to kMaxDim would overflow int64 bytes; 1 TiB is absurd.
constexpr int64_t kMaxPageBytes = int64_t{1} << 40;

absl::Status CheckPages(const torch::Tensor& pages) {
  if (pages.dim() != 6 || pages.size(2) != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pages must be (n, n_layer, 2, n_head, page_size, head_dim); got ", pages.dim(), "-D"));
  }
  return absl::OkStatus();
}

absl::Status CheckIndices(absl::Span<const int32_t> pages, int64_t num_pages, bool unique) {
  for (int32_t page : pages) {
    if (page < 0 || page >= num_pages) {
      return absl::InvalidArgumentError(
          absl::StrCat("page ", page, " out of range [0, ", num_pages, ")"));
    }
  }
  if (unique) {
    std::vector<int32_t> sorted(pages.begin(), pages.end());
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return absl::InvalidArgumentError("a page is listed twice");
    }
  }
  return absl::OkStatus();
}

torch::Tensor IndexTensor(absl::Span<const int32_t> pages, torch::Device device) {
  return HostToDevice(torch::tensor(std::vector<int64_t>(pages.begin(), pages.end()), torch::kLong),
                      device);
}

// Copies the pages by page_copy_cuda.h's kernel when both pools are
// contiguous, of one dtype and on one GPU (a pool mapped over CUDA IPC is
// on the device it was mapped into): returns false, having done nothing,
// otherwise. Enqueued on `to`'s device's current stream; nothing waits.
bool CopyPagesOnDevice(const torch::Tensor& from, absl::Span<const int32_t> from_pages,
                       const torch::Tensor& to, absl::Span<const int32_t> to_pages) {
#ifdef NANOSERVE_WITH_CUDA
  if (!from.is_cuda() || !to.is_cuda() || from.device() != to.device() ||
      from.scalar_type() != to.scalar_type() || !from.is_contiguous() || !to.is_contiguous()) {
    return false;
  }
  const int64_t page_bytes = static_cast<int64_t>(from[0].nbytes());
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (page_bytes % 16 != 0 || !aligned(from.data_ptr()) || !aligned(to.data_ptr())) return false;
  const c10::cuda::CUDAGuard guard(to.device());
  const cudaError_t launched =
      cuda::LaunchCopyPages(from.data_ptr(), to.data_ptr(), from_pages.data(), to_pages.data(),
                            static_cast<int64_t>(from_pages.size()), page_bytes,
                            at::cuda::getCurrentCUDAStream(to.device().index()));
  TORCH_CHECK(launched == cudaSuccess, "copying KV pages: ", cudaGetErrorString(launched));
  return true;
#else
  (void)from, (void)from_pages, (void)to, (void)to_pages;
  return false;
#endif
}

}  // namespace

int64_t PageLayout::bytes_per_page() const {
  return n_layer * 2 * n_head * page_size * head_dim *
         static_cast<int64_t>(c10::elementSize(dtype));
}

std::vector<int64_t> PageLayout::shape(int64_t n_pages) const {
  return {n_pages, n_layer, 2, n_head, page_size, head_dim};
}

absl::Status PageLayout::Validate() const {
  for (int64_t v : {n_layer, n_head, head_dim, page_size}) {
    if (v < 1 || v > kMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat("bad KV page layout ", ToString()));
    }
  }
  // bytes_per_page() in 128 bits: at most 2^(4 * 16 + 1 + 3).
  const __int128 page_bytes = static_cast<__int128>(n_layer) * 2 * n_head * page_size * head_dim *
                              static_cast<int64_t>(c10::elementSize(dtype));
  if (page_bytes > kMaxPageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page layout ", ToString(), " has pages over ", kMaxPageBytes, " bytes"));
  }
  return absl::OkStatus();
}

std::string PageLayout::ToString() const {
  return absl::StrFormat("{%s, n_layer %d, n_head %d, head_dim %d, page_size %d}",
                         c10::toString(dtype), n_layer, n_head, head_dim, page_size);
}

absl::StatusOr<torch::Tensor> EmptyPages(const PageLayout& layout, int64_t n_pages,
                                         torch::Device device) {
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  absl::StatusOr<torch::Tensor> pages = TorchResult("allocating KV pages", [&] {
    return torch::empty(layout.shape(n_pages),
                        torch::TensorOptions().dtype(layout.dtype).device(device));
  });
  if (!pages.ok() && pages.status().code() == absl::StatusCode::kInternal) {
    // An allocation that fails is out of memory, whatever LibTorch calls it.
    return absl::ResourceExhaustedError(pages.status().message());
  }
  return pages;
}

namespace {

// runs: (R, n, middle..., P, D), R rows of n pages each -> each row's n * P
// positions in order: (R, middle..., n * P, D).
torch::Tensor RunsAsPositions(const torch::Tensor& runs) {
  const int64_t d = runs.dim();
  std::vector<int64_t> order{0};
  std::vector<int64_t> shape{runs.size(0)};
  for (int64_t i = 2; i < d - 2; ++i) {
    order.push_back(i);
    shape.push_back(runs.size(i));
  }
  order.insert(order.end(), {1, d - 2, d - 1});
  shape.insert(shape.end(), {runs.size(1) * runs.size(d - 2), runs.size(d - 1)});
  return runs.permute(order).reshape(shape);
}

}  // namespace

torch::Tensor PagesAsTokens(const torch::Tensor& pages) {
  TORCH_CHECK(pages.dim() == 6, "PagesAsTokens: pages of shape ", pages.sizes(), " are not 6-D");
  return RunsAsPositions(pages.unsqueeze(0)).squeeze(0);
}

void ScatterPositions(const torch::Tensor& pool, const torch::Tensor& pages,
                      const torch::Tensor& offsets, const torch::Tensor& values) {
  using torch::indexing::Slice;
  std::vector<torch::indexing::TensorIndex> at{pages};
  for (int64_t i = 1; i < pool.dim() - 2; ++i) at.emplace_back(Slice());
  at.emplace_back(offsets);
  torch::Tensor out = pool;
  out.index_put_(at, values);
}

torch::Tensor GatherPositions(const torch::Tensor& pool, const torch::Tensor& table,
                              int64_t length) {
  std::vector<int64_t> runs = pool.sizes().vec();  // (R, n, middle..., P, D)
  runs[0] = table.size(1);
  runs.insert(runs.begin(), table.size(0));
  return RunsAsPositions(pool.index_select(0, table.reshape(-1)).view(runs)).narrow(-2, 0, length);
}

PageRun::PageRun(absl::Span<const int32_t> pages, int64_t page_size, int64_t tokens)
    : pages_(pages), page_size_(page_size), tokens_(tokens) {}

int64_t PageRun::PagesFor(int64_t tokens, int64_t page_size) {
  return (tokens + page_size - 1) / page_size;
}

int64_t PageRun::StagedTokens(const torch::Tensor& staged) {
  return staged.size(0) * staged.size(4);
}

absl::Status PageRun::CheckStaged(const torch::Tensor& staged, const PageLayout& layout,
                                  int64_t max_tokens) {
  if (staged.dim() != 6 || staged.size(1) != layout.n_layer || staged.size(2) != 2 ||
      staged.size(3) != layout.n_head || staged.size(5) != layout.head_dim ||
      StagedTokens(staged) > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("pages of shape ", c10::str(staged.sizes()),
                                                   " do not fit ", max_tokens, " tokens of ",
                                                   layout.ToString()));
  }
  return absl::OkStatus();
}

absl::Status PageRun::CheckTokens(const torch::Tensor& kv, const PageLayout& layout) {
  if (kv.dim() != 5 || kv.size(0) != layout.n_layer || kv.size(1) != 2 ||
      kv.size(2) != layout.n_head || kv.size(4) != layout.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("K/V of shape ", c10::str(kv.sizes()), " do not fit ", layout.ToString()));
  }
  return absl::OkStatus();
}

void PageRun::AppendPositions(int64_t begin, int64_t end, std::vector<int64_t>& pages,
                              std::vector<int64_t>& offsets) const {
  for (int64_t pos = begin; pos < end; ++pos) {
    pages.push_back(pages_[pos / page_size_]);
    offsets.push_back(pos % page_size_);
  }
}

void PageRun::AppendPages(int64_t n, int32_t pad, std::vector<int64_t>& out) const {
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(i < static_cast<int64_t>(pages_.size()) ? pages_[i] : pad);
  }
}

absl::Status PageRun::Write(const torch::Tensor& pool, int64_t begin,
                            const torch::Tensor& kv) const {
  if (kv.dim() != 5 || !Fits(begin, begin + kv.size(3))) {
    return absl::InvalidArgumentError(absl::StrCat("K/V of shape ", c10::str(kv.sizes()),
                                                   " at position ", begin, " do not fit ",
                                                   pages_.size(), " pages of ", page_size_));
  }
  std::vector<int64_t> pages, offsets;
  AppendPositions(begin, begin + kv.size(3), pages, offsets);
  return RunTorch("writing K/V into pages", [&] {
    auto on_pool = [&](const std::vector<int64_t>& v) {
      return HostToDevice(torch::tensor(v, torch::kLong), pool.device());
    };
    // (T, n_layer, 2, n_head, head_dim): one position a row.
    ScatterPositions(pool, on_pool(pages), on_pool(offsets),
                     kv.permute({3, 0, 1, 2, 4}).to(pool.device(), pool.scalar_type()));
  });
}

absl::StatusOr<torch::Tensor> PageRun::Read(const torch::Tensor& pool, int64_t begin,
                                            int64_t end) const {
  if (begin < 0 || begin > end || end > tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("[", begin, ", ", end, ") outside the run's ", tokens_, " tokens"));
  }
  std::vector<int64_t> table;
  AppendPages(PagesFor(end, page_size_), 0, table);
  return TorchResult("reading K/V from pages", [&] {
    const int64_t n = static_cast<int64_t>(table.size());
    torch::Tensor ids =
        HostToDevice(torch::tensor(table, torch::kLong), pool.device()).view({1, n});
    return GatherPositions(pool, ids, end).select(0, 0).narrow(3, begin, end - begin).contiguous();
  });
}

torch::Tensor TokensAsPages(const torch::Tensor& kv, int64_t page_size) {
  TORCH_CHECK(kv.dim() == 5 && page_size >= 1 && kv.size(3) % page_size == 0,
              "TokensAsPages: K/V of shape ", kv.sizes(), " are not whole pages of ", page_size);
  return kv.view({kv.size(0), 2, kv.size(2), kv.size(3) / page_size, page_size, kv.size(4)})
      .permute({3, 0, 1, 2, 4, 5})
      .contiguous();
}

absl::StatusOr<torch::Tensor> ReadPages(const torch::Tensor& pool, absl::Span<const int32_t> pages,
                                        torch::Device device) {
  if (absl::Status s = CheckPages(pool); !s.ok()) return s;
  if (absl::Status s = CheckIndices(pages, pool.size(0), false); !s.ok()) return s;
  return TorchResult("reading KV pages", [&] {
    if (pool.device() == device && pool.is_cuda()) {  // one kernel, no index upload
      std::vector<int64_t> shape = pool.sizes().vec();
      shape[0] = static_cast<int64_t>(pages.size());
      torch::Tensor out = torch::empty(shape, pool.options());
      std::vector<int32_t> dense(pages.size());
      std::iota(dense.begin(), dense.end(), 0);
      if (pages.empty() || CopyPagesOnDevice(pool, pages, out, dense)) return out;
    }
    return pool.index_select(0, IndexTensor(pages, pool.device())).to(device).contiguous();
  });
}

absl::Status WritePages(const torch::Tensor& pool, absl::Span<const int32_t> pages,
                        const torch::Tensor& staged) {
  if (absl::Status s = CheckPages(pool); !s.ok()) return s;
  if (absl::Status s = CheckIndices(pages, pool.size(0), true); !s.ok()) return s;
  std::vector<int64_t> want = pool.sizes().vec();
  want[0] = static_cast<int64_t>(pages.size());
  if (!staged.sizes().equals(want)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pages of shape ", c10::str(staged.sizes()), " do not fit ", c10::str(want)));
  }
  return RunTorch("writing KV pages", [&] {
    torch::Tensor out = pool;
    out.index_copy_(0, IndexTensor(pages, pool.device()),
                    staged.to(pool.device(), pool.scalar_type()));
  });
}

absl::Status CopyPages(const torch::Tensor& from, absl::Span<const int32_t> from_pages,
                       const torch::Tensor& to, absl::Span<const int32_t> to_pages) {
  if (absl::Status s = CheckPages(from); !s.ok()) return s;
  if (absl::Status s = CheckPages(to); !s.ok()) return s;
  if (!from.sizes().slice(1).equals(to.sizes().slice(1))) {
    return absl::InvalidArgumentError(absl::StrCat("pages of shape ", c10::str(from.sizes()),
                                                   " copied into pages of shape ",
                                                   c10::str(to.sizes())));
  }
  if (from_pages.size() != to_pages.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(from_pages.size(), " pages copied into ", to_pages.size()));
  }
  if (absl::Status s = CheckIndices(from_pages, from.size(0), false); !s.ok()) return s;
  if (absl::Status s = CheckIndices(to_pages, to.size(0), true); !s.ok()) return s;
  if (from_pages.empty()) return absl::OkStatus();
  return RunTorch("copying KV pages", [&] {
    torch::Tensor out = to;
    if (from.is_cpu() && to.is_cpu()) {
      // Straight into pages already touched (a staging run would be fresh
      // memory whose first write faults every 4 KiB), and as plain memcpy
      // where it can be: a copy_ per page is a parallel region per page,
      // each waiting for a thread the other processes may hold the core of.
      if (from.scalar_type() == to.scalar_type() && from.is_contiguous() && to.is_contiguous()) {
        const size_t bytes = static_cast<size_t>(from[0].nbytes());
        const char* src = static_cast<const char*>(from.data_ptr());
        char* dst = static_cast<char*>(out.data_ptr());
        for (size_t i = 0; i < from_pages.size(); ++i) {
          std::memcpy(dst + to_pages[i] * bytes, src + from_pages[i] * bytes, bytes);
        }
        return;
      }
      for (size_t i = 0; i < from_pages.size(); ++i) out[to_pages[i]].copy_(from[from_pages[i]]);
      return;
    }
    if (CopyPagesOnDevice(from, from_pages, out, to_pages)) return;
    torch::Tensor gathered = from.index_select(0, IndexTensor(from_pages, from.device()));
    out.index_copy_(0, IndexTensor(to_pages, to.device()),
                    gathered.to(to.device(), to.scalar_type()));
  });
}

absl::StatusOr<torch::Tensor> PagesFromBytes(const PageLayout& layout, absl::string_view bytes) {
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  const int64_t per_page = layout.bytes_per_page();
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (per_page <= 0 || size % per_page != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(size, " bytes is not a whole number of ", per_page, "-byte pages"));
  }
  absl::StatusOr<torch::Tensor> pages = EmptyPages(layout, size / per_page, torch::kCPU);
  if (pages.ok() && size > 0) std::memcpy(pages->data_ptr(), bytes.data(), bytes.size());
  return pages;
}

void CopyPoolBytes(const torch::Tensor& pool, const PageLayout& layout,
                   absl::Span<const int32_t> pages, int64_t offset, int64_t size, char* out) {
  const char* base = static_cast<const char*>(pool.data_ptr());
  const int64_t per_page = layout.bytes_per_page();
  for (int64_t done = 0; done < size;) {  // the range may span pages
    const int64_t at = offset + done;
    const int64_t page = at / per_page, within = at % per_page;
    const int64_t len = std::min(size - done, per_page - within);
    std::memcpy(out + done, base + pages[page] * per_page + within, len);
    done += len;
  }
}

}  // namespace nanoserve
