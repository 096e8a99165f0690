#include "engine/page_transfer.h"

namespace nanoserve {
namespace {

using torch::indexing::Slice;

// Flat per-token indices of the runs, on `device`: row, position, page, offset.
struct TokenIndex {
  torch::Tensor row, position, page, offset;  // each (N,) int64
  int64_t size = 0;
};

TokenIndex Index(absl::Span<const PageRun> runs, int64_t page_size, int64_t num_pages,
                 torch::Device device) {
  std::vector<int64_t> row, position, page, offset;
  for (const PageRun& run : runs) {
    for (size_t i = 0; i < run.pages.size(); ++i) {
      TORCH_CHECK(run.pages[i] >= 0 && run.pages[i] < num_pages, "page ", run.pages[i],
                  " out of range [0, ", num_pages, ")");
      for (int64_t j = 0; j < page_size; ++j) {
        row.push_back(run.row);
        position.push_back(run.begin + static_cast<int64_t>(i) * page_size + j);
        page.push_back(run.pages[i]);
        offset.push_back(j);
      }
    }
  }
  auto to_device = [&](const std::vector<int64_t>& v) {
    return torch::tensor(v, torch::kLong).to(device);
  };
  return {to_device(row), to_device(position), to_device(page), to_device(offset),
          static_cast<int64_t>(row.size())};
}

}  // namespace

void LoadRuns(const torch::Tensor& storage, absl::Span<const PageRun> runs, KvCache& cache) {
  TORCH_CHECK(storage.dim() == 6, "LoadRuns: storage must be 6-D");
  TokenIndex index = Index(runs, storage.size(4), storage.size(0), cache.k(0).device());
  // Layer by layer, so the gathered copy is one layer's (N, 2, H, D), not
  // all layers' at once.
  for (int64_t l = 0; index.size > 0 && l < cache.n_layer(); ++l) {
    torch::Tensor kv = storage.select(1, l)
                           .index({index.page, Slice(), Slice(), index.offset})
                           .to(cache.k(l).dtype());  // (N, 2, H, D)
    cache.k(l).index_put_({index.row, Slice(), index.position}, kv.select(1, 0));
    cache.v(l).index_put_({index.row, Slice(), index.position}, kv.select(1, 1));
  }
  for (const PageRun& run : runs) {
    cache.set_length(run.row, run.begin + static_cast<int64_t>(run.pages.size()) * storage.size(4));
  }
}

void StoreRuns(const KvCache& cache, absl::Span<const PageRun> runs,
               const torch::Tensor& storage) {
  TORCH_CHECK(storage.dim() == 6, "StoreRuns: storage must be 6-D");
  TokenIndex index = Index(runs, storage.size(4), storage.size(0), storage.device());
  if (index.size == 0) return;
  std::vector<torch::Tensor> layers;
  for (int64_t l = 0; l < cache.n_layer(); ++l) {
    layers.push_back(torch::stack({cache.k(l).index({index.row, Slice(), index.position}),
                                   cache.v(l).index({index.row, Slice(), index.position})},
                                  1));  // (N, 2, H, D)
  }
  torch::Tensor kv = torch::stack(layers, 1).to(storage.dtype());  // (N, L, 2, H, D)
  torch::Tensor pool = storage;  // the same storage, through a non-const handle
  pool.index_put_({index.page, Slice(), Slice(), Slice(), index.offset}, kv);
}

}  // namespace nanoserve
