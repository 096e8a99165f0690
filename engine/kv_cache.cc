#include "engine/kv_cache.h"

namespace nanoserve {

PageLayout KvPageLayout(const Gpt2Config& config, torch::Dtype dtype, int64_t page_size) {
  PageLayout layout;
  layout.n_layer = config.n_layer;
  layout.n_head = config.n_head;
  layout.head_dim = config.head_dim();
  layout.page_size = page_size;
  layout.dtype = dtype;
  return layout;
}

KvCache::KvCache(const Gpt2Config& config, int64_t batch, int64_t capacity, torch::Dtype dtype,
                 torch::Device device)
    : capacity_(capacity), lengths_(batch, 0) {
  TORCH_CHECK(batch >= 1, "KvCache batch must be >= 1");
  TORCH_CHECK(capacity >= 1, "KvCache capacity must be >= 1");
  auto opts = torch::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < config.n_layer; ++l) {
    k_.push_back(torch::zeros({batch, config.n_head, capacity, config.head_dim()}, opts));
    v_.push_back(torch::zeros({batch, config.n_head, capacity, config.head_dim()}, opts));
  }
}

int64_t KvCache::bytes() const {
  int64_t total = 0;
  for (size_t l = 0; l < k_.size(); ++l) total += k_[l].nbytes() + v_[l].nbytes();
  return total;
}

void KvCache::set_length(int64_t row, int64_t n) {
  TORCH_CHECK(n >= 0 && n <= capacity_, "KV length ", n, " outside [0, ", capacity_, "]");
  lengths_[row] = n;
}

torch::Tensor KvCache::ReadRow(int64_t row, int64_t begin, int64_t end) const {
  TORCH_CHECK(0 <= begin && begin <= end && end <= capacity_, "ReadRow: bad range");
  std::vector<torch::Tensor> layers;
  layers.reserve(k_.size());
  for (size_t l = 0; l < k_.size(); ++l) {
    layers.push_back(torch::stack(
        {k_[l][row].narrow(1, begin, end - begin), v_[l][row].narrow(1, begin, end - begin)}));
  }
  return torch::stack(layers);  // (n_layer, 2, H, end-begin, D)
}

}  // namespace nanoserve
