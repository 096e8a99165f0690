// Workbench: prefill attention over paged K/V on GPT-2's shapes (12 heads of
// 64, pages of 16 tokens), each version checked against an fp64 CPU
// reference and timed as a graph node. Query i attends to keys 0..pos_i of
// its row, read through the row's block table (the cached prefix and the
// pass's own tokens, which AppendKv wrote before).
//
// Versions, all the engine's LaunchPrefillAttention
// (engine/cuda/prefill_attention.cu, PrefillAttentionParams::version), a
// block per (head, 32 consecutive queries of a row):
//   fma           each key tile of 32 read once into shared memory as fp32,
//                 scores and values by fp32 FMA (kFma).
//   tensor-cores  bf16 (and fp16): 2 warps of 16 queries, a tile of 64 keys
//                 and values in shared memory as bf16, S = Q K^T and
//                 O += P V by nvcuda::wmma products with fp32 sums
//                 (FlashAttention 2's order of work).
//   registers     bf16: FlashAttention 2's register form (kRegisters,
//                 engine/cuda/prefill_attention_mma.cu): Q, S, P and the
//                 running output as mma.sync fragments, K and V by ldmatrix
//                 from two cp.async stages.
//   tc-splitN     the tensor cores' kernel with each tile's keys split into N
//                 ranges (PrefillAttentionParams::splits) and merged by a
//                 second kernel (registers-splitN likewise); the -auto ones
//                 with the splits the engine's graphs choose
//                 (PrefillAttentionSplits) for the case's tiles.
//
// Cases: one prompt of 900 tokens (a batch-1 TTFT), 64 prompts of 128 (a
// wave of admissions), 32 suffixes of 54 after 896 cached tokens (Part C's
// reuse), 32 prompts of 950 (Part C's recompute), and a lone request's
// suffix after 896 cached tokens: 4 (its prompt again) and 50 new tokens.
#include "engine/cuda/prefill_attention.cu"      // the engine's kernels
#include "engine/cuda/prefill_attention_mma.cu"  // (the register form)

#include "engine/cuda/workbench/workbench.cuh"

namespace nanoserve::workbench {
namespace {

using cuda::PrefillAttentionParams;

constexpr int kHeads = 12, kHeadDim = 64, kPageSize = 16;

// --- the cases ----------------------------------------------------------------

struct Case {
  const char* name;
  int rows, cached, queries;  // per row
};

// Tiles of `size` consecutive queries of a row, as (first token, count).
std::vector<int32_t> Tiles(const Case& c, int size) {
  std::vector<int32_t> tiles;
  for (int r = 0; r < c.rows; ++r) {
    for (int q = 0; q < c.queries; q += size) {
      tiles.push_back(r * c.queries + q);
      tiles.push_back(std::min(size, c.queries - q));
    }
  }
  return tiles;
}

void RunCase(const Device& d, const Args& args, DType t, const Case& c) {
  const int C = kHeads * kHeadDim, len = c.cached + c.queries;
  const int max_pages = (len + kPageSize - 1) / kPageSize;
  const int tokens = c.rows * c.queries, num_pages = c.rows * max_pages;
  std::mt19937 rng(c.rows * 131 + c.queries);
  // A pool of one layer's K and V pages: (page, K|V, head, slot, dim).
  std::vector<float> pool =
      RandomValues(static_cast<size_t>(num_pages) * 2 * C * kPageSize, -1, 1, rng);
  std::vector<float> qkv = RandomValues(static_cast<size_t>(tokens) * 3 * C, -1, 1, rng);
  DeviceBuffer pool_d = Upload(pool, t), qkv_d = Upload(qkv, t);
  std::vector<int32_t> order(num_pages);
  for (int i = 0; i < num_pages; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> rows(tokens), positions(tokens);
  for (int i = 0; i < tokens; ++i) {
    rows[i] = i / c.queries;
    positions[i] = c.cached + i % c.queries;
  }
  auto upload_ints = [](const std::vector<int32_t>& v) {
    DeviceBuffer b(v.size() * sizeof(int32_t));
    WB_CHECK_CUDA(cudaMemcpy(b.get(), v.data(), b.bytes(), cudaMemcpyHostToDevice));
    return b;
  };
  DeviceBuffer table_d = upload_ints(order), rows_d = upload_ints(rows),
               positions_d = upload_ints(positions);
  const int64_t page_stride = 2 * static_cast<int64_t>(C) * kPageSize;
  const size_t esize = ElementBytes(t);

  // fp64 reference over the rounded inputs.
  std::vector<double> ref(static_cast<size_t>(tokens) * C);
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  ParallelFor(static_cast<size_t>(tokens) * kHeads, [&](size_t begin, size_t end) {
    std::vector<double> w;
    for (size_t th = begin; th < end; ++th) {
      const int i = static_cast<int>(th / kHeads), h = static_cast<int>(th % kHeads);
      const int r = rows[i], pos = positions[i];
      auto at = [&](int key, int kv) {
        const int64_t page = order[r * max_pages + key / kPageSize];
        return page * page_stride + kv * static_cast<int64_t>(C) * kPageSize +
               (static_cast<int64_t>(h) * kPageSize + key % kPageSize) * kHeadDim;
      };
      const float* q = &qkv[static_cast<size_t>(i) * 3 * C + h * kHeadDim];
      w.assign(pos + 1, 0.0);
      double mx = -INFINITY;
      for (int j = 0; j <= pos; ++j) {
        double dot = 0;
        const float* k = &pool[at(j, 0)];
        for (int x = 0; x < kHeadDim; ++x) dot += static_cast<double>(q[x]) * k[x];
        w[j] = dot * scale;
        mx = std::max(mx, w[j]);
      }
      double total = 0;
      for (double& v : w) total += (v = std::exp(v - mx));
      double* o = &ref[static_cast<size_t>(i) * C + h * kHeadDim];
      for (int j = 0; j <= pos; ++j) {
        const float* v = &pool[at(j, 1)];
        for (int x = 0; x < kHeadDim; ++x) o[x] += w[j] / total * v[x];
      }
    }
  });

  DeviceBuffer out_d(static_cast<size_t>(tokens) * C * esize);
  PrefillAttentionParams p;
  p.dtype = t;
  p.qkv = qkv_d.get();
  p.k_pages = pool_d.get();
  p.v_pages = pool_d.as<unsigned char>() + static_cast<size_t>(C) * kPageSize * esize;
  p.page_stride = page_stride;
  p.block_table = table_d.as<int32_t>();
  p.table_rows = rows_d.as<int32_t>();
  p.positions = positions_d.as<int32_t>();
  p.out = out_d.get();
  p.heads = kHeads;
  p.head_dim = kHeadDim;
  p.page_size = kPageSize;
  p.max_pages = max_pages;
  p.scale = static_cast<float>(scale);
  const Tolerance tol = t == DType::kFloat ? Tolerance{1e-4, 1e-4} : Tolerance{2e-2, 2e-2};
  // The bytes: q read, each row's keys and values read once, out written.
  const double bytes =
      esize * (static_cast<double>(tokens) * 2 * C + static_cast<double>(c.rows) * len * 2 * C);

  const std::vector<int32_t> tiles = Tiles(c, cuda::kPrefillQueryTile);
  DeviceBuffer tiles_d = upload_ints(tiles);
  p.tiles = tiles_d.as<int32_t>();
  p.num_tiles = static_cast<int>(tiles.size() / 2);
  DeviceBuffer workspace_d(static_cast<size_t>(tokens) * kHeads * cuda::kMaxPrefillAttentionSplits *
                           (kHeadDim + cuda::kPrefillPartialHead) * sizeof(float));
  const int auto_splits =
      cuda::PrefillAttentionSplits(tokens, kHeads, len, d.props.multiProcessorCount);
  using cuda::PrefillAttentionVersion;
  auto run = [&](const std::string& version, PrefillAttentionVersion kernel, int splits) {
    if (!args.Wants("prefill_attention " + version + " " + c.name)) return;
    PrefillAttentionParams q = p;
    q.version = kernel;
    q.splits = splits;
    q.workspace = workspace_d.as<float>();
    auto launch = cuda::LaunchPrefillAttention;
    Row row{"prefill_attention", version, c.name, c.rows, t};
    row.bytes = bytes;
    out_d.Poison();
    WB_CHECK_CUDA(launch(q, nullptr));
    WB_CHECK_CUDA(cudaDeviceSynchronize());
    row.check = Compare(Download(out_d.get(), ref.size(), t), ref, tol);
    row.us = TimeGraph([&](cudaStream_t s, int) { WB_CHECK_CUDA(launch(q, s)); }, 10);
    PrintRow(d, row);
  };
  run("fma", PrefillAttentionVersion::kFma, 1);
  run("fma-auto" + std::to_string(auto_splits), PrefillAttentionVersion::kFma, auto_splits);
  if (cuda::PrefillAttentionOnTensorCores(t, kHeadDim)) {
    for (const auto& [name, kernel] :
         {std::pair{"tc", PrefillAttentionVersion::kWmma},
          std::pair{"registers", PrefillAttentionVersion::kRegisters}}) {
      const std::string v = name;
      run(v == "tc" ? "tensor-cores" : v, kernel, 1);
      for (int splits : {2, 4, 8, 16}) run(v + "-split" + std::to_string(splits), kernel, splits);
      run(v + "-auto" + std::to_string(auto_splits), kernel, auto_splits);
    }
  }
}

}  // namespace
}  // namespace nanoserve::workbench

int main(int argc, char** argv) {
  using namespace nanoserve::workbench;
  const Args args = ParseArgs(argc, argv);
  const Device d = OpenDevice();
  const std::vector<Case> cases = {{"1x900", 1, 0, 900},         {"64x128", 64, 0, 128},
                                   {"32x(896+54)", 32, 896, 54}, {"32x950", 32, 0, 950},
                                   {"1x(896+4)", 1, 896, 4},     {"1x(896+50)", 1, 896, 50}};
  for (const Case& c : cases) {
    if (args.quick && c.rows * (c.cached + c.queries) > 20000) continue;
    for (DType t : {DType::kBFloat16, DType::kFloat}) RunCase(d, args, t, c);
  }
  return 0;
}
