// Workbench: prefill attention over paged K/V on GPT-2's shapes (12 heads of
// 64, pages of 16 tokens), each version checked against an fp64 CPU
// reference and timed as a graph node. Query i attends to keys 0..pos_i of
// its row, read through the row's block table (the cached prefix and the
// pass's own tokens, which AppendKv wrote before).
//
// Versions:
//   engine  the engine's LaunchPrefillAttention (engine/cuda/prefill_attention.cu):
//           a block per (head, 32 consecutive queries of a row), each key
//           tile of 32 read once into shared memory as fp32, scores and
//           values by fp32 FMA.
//   wmma    tensor cores (bf16 only): a block per (head, 64 queries), each
//           of its 4 warps 16 queries; a tile of 64 keys and values in shared
//           memory as bf16; S = Q K^T and O += P V by nvcuda::wmma 16x16x16
//           bf16 products with fp32 sums; the online softmax on S in shared
//           memory, P rounded to bf16 for its product (FlashAttention 2's
//           order of work, without its register-resident fragments: the
//           running output lives in shared memory between tiles).
//
// Cases: one prompt of 900 tokens (a batch-1 TTFT), 64 prompts of 128 (a
// wave of admissions), 32 suffixes of 54 after 896 cached tokens (Part C's
// reuse), 32 prompts of 950 (Part C's recompute).
#include "engine/cuda/prefill_attention.cu"  // the engine's kernel: version engine

#include "engine/cuda/workbench/workbench.cuh"

#include <mma.h>

namespace nanoserve::workbench {
namespace {

using cuda::PrefillAttentionParams;

constexpr int kHeads = 12, kHeadDim = 64, kPageSize = 16;

// --- wmma: tensor cores ------------------------------------------------------

constexpr int kWmmaQueries = 64;           // queries per block (4 warps x 16)
constexpr int kWmmaKeys = 64;              // keys per shared-memory tile
constexpr int kHalfStride = kHeadDim + 8;  // bf16 elements from a row to the next
constexpr int kFloatStride = kWmmaKeys + 4;
// Shared memory, in bytes, each part 32-byte aligned: Q, K, V (64 rows of
// bf16 each), then per warp S (16 x 64 fp32), O (16 x 64 fp32), P (16 x 64
// bf16).
constexpr int kQBytes = kWmmaQueries * kHalfStride * 2;
constexpr int kKvBytes = kWmmaKeys * kHalfStride * 2;
constexpr int kSBytes = 16 * kFloatStride * 4;
constexpr int kPBytes = 16 * kHalfStride * 2;
constexpr int kWmmaSmem = kQBytes + 2 * kKvBytes + 4 * (2 * kSBytes + kPBytes);

__global__ void __launch_bounds__(128) WmmaPrefillAttention(PrefillAttentionParams p) {
  namespace wmma = nvcuda::wmma;
  extern __shared__ __align__(32) unsigned char smem[];
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* k_s = reinterpret_cast<__nv_bfloat16*>(smem + kQBytes);
  __nv_bfloat16* v_s = reinterpret_cast<__nv_bfloat16*>(smem + kQBytes + kKvBytes);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned char* mine = smem + kQBytes + 2 * kKvBytes + warp * (2 * kSBytes + kPBytes);
  float* s_w = reinterpret_cast<float*>(mine);
  float* o_w = reinterpret_cast<float*>(mine + kSBytes);
  __nv_bfloat16* p_w = reinterpret_cast<__nv_bfloat16*>(mine + 2 * kSBytes);

  const int h = blockIdx.x, tile = blockIdx.y;
  const int first = p.tiles[2 * tile], count = p.tiles[2 * tile + 1];
  if (count <= 0) return;
  const int C = p.heads * kHeadDim;
  const int pos0 = p.positions[first];
  const int keys = p.positions[first + count - 1] + 1;
  const int32_t* table = p.block_table + static_cast<int64_t>(p.table_rows[first]) * p.max_pages;
  const __nv_bfloat16* qkv = static_cast<const __nv_bfloat16*>(p.qkv);
  const __nv_bfloat16* k_pages = static_cast<const __nv_bfloat16*>(p.k_pages);
  const __nv_bfloat16* v_pages = static_cast<const __nv_bfloat16*>(p.v_pages);

  // Q: 64 rows of 64, 8 elements (16 bytes) a thread a step; rows past the
  // tile are zeros (their outputs are not written).
  for (int c = threadIdx.x; c < kWmmaQueries * kHeadDim / 8; c += blockDim.x) {
    const int r = c / (kHeadDim / 8), d = (c % (kHeadDim / 8)) * 8;
    int4 bits = make_int4(0, 0, 0, 0);
    if (r < count) {
      bits = *reinterpret_cast<const int4*>(qkv + static_cast<int64_t>(first + r) * 3 * C +
                                            h * kHeadDim + d);
    }
    *reinterpret_cast<int4*>(q_s + r * kHalfStride + d) = bits;
  }
  for (int i = lane; i < 16 * kFloatStride; i += 32) o_w[i] = 0.0f;
  // Each lane keeps half a row's softmax state: row lane / 2.
  const int row = lane / 2, half = lane % 2;
  const int position = pos0 + warp * 16 + row;  // the row's query position
  float m = -INFINITY, l = 0.0f;

  for (int k0 = 0; k0 < keys; k0 += kWmmaKeys) {
    __syncthreads();  // the last tile's K and V have been read
    for (int c = threadIdx.x; c < kWmmaKeys * kHeadDim / 8; c += blockDim.x) {
      const int j = c / (kHeadDim / 8), d = (c % (kHeadDim / 8)) * 8;
      const int key = k0 + j;
      int4 kb = make_int4(0, 0, 0, 0), vb = make_int4(0, 0, 0, 0);
      if (key < keys) {
        const int64_t at = table[key / p.page_size] * p.page_stride +
                           (static_cast<int64_t>(h) * p.page_size + key % p.page_size) * kHeadDim +
                           d;
        kb = *reinterpret_cast<const int4*>(k_pages + at);
        vb = *reinterpret_cast<const int4*>(v_pages + at);
      }
      *reinterpret_cast<int4*>(k_s + j * kHalfStride + d) = kb;
      *reinterpret_cast<int4*>(v_s + j * kHalfStride + d) = vb;
    }
    __syncthreads();

    // S (16 x 64) = Q_w (16 x 64) K^T (64 x 64).
    for (int n = 0; n < kWmmaKeys / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int k = 0; k < kHeadDim / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
        wmma::load_matrix_sync(a, q_s + warp * 16 * kHalfStride + k * 16, kHalfStride);
        wmma::load_matrix_sync(b, k_s + n * 16 * kHalfStride + k * 16, kHalfStride);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(s_w + n * 16, acc, kFloatStride, wmma::mem_row_major);
    }
    __syncwarp();

    // The online softmax of the lane's half row (32 keys), then its partner's.
    float* s_row = s_w + row * kFloatStride + half * 32;
    float tile_max = -INFINITY;
    for (int j = 0; j < 32; ++j) {
      const int key = k0 + half * 32 + j;
      const float s = key <= position ? s_row[j] * p.scale : -INFINITY;
      s_row[j] = s;
      tile_max = fmaxf(tile_max, s);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);  // key 0 is in the first tile: finite
    const float rescale = __expf(m - m_new);
    float sum = 0.0f;
    __nv_bfloat16* p_row = p_w + row * kHalfStride + half * 32;
    for (int j = 0; j < 32; ++j) {
      const __nv_bfloat16 w = __float2bfloat16(__expf(s_row[j] - m_new));
      p_row[j] = w;
      sum += __bfloat162float(w);  // the weights as the product sees them
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * rescale + sum;
    m = m_new;
    float* o_row = o_w + row * kFloatStride + half * 32;
    for (int j = 0; j < 32; ++j) o_row[j] *= rescale;
    __syncwarp();

    // O_w (16 x 64) += P_w (16 x 64 keys) V (64 keys x 64).
    for (int n = 0; n < kHeadDim / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, o_w + n * 16, kFloatStride, wmma::mem_row_major);
      for (int k = 0; k < kWmmaKeys / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
        wmma::load_matrix_sync(a, p_w + k * 16, kHalfStride);
        wmma::load_matrix_sync(b, v_s + k * 16 * kHalfStride + n * 16, kHalfStride);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(o_w + n * 16, acc, kFloatStride, wmma::mem_row_major);
    }
    __syncwarp();
  }
  const int r = warp * 16 + row;
  if (r >= count) return;
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(p.out) + static_cast<int64_t>(first + r) * C +
                       h * kHeadDim + half * 32;
  const float inv = 1.0f / l;
  const float* o_row = o_w + row * kFloatStride + half * 32;
  for (int j = 0; j < 32; ++j) out[j] = __float2bfloat16(o_row[j] * inv);
}

cudaError_t LaunchWmma(const PrefillAttentionParams& p, cudaStream_t stream) {
  if (p.dtype != DType::kBFloat16 || p.head_dim != kHeadDim) return cudaErrorInvalidValue;
  static const cudaError_t opted = cudaFuncSetAttribute(
      WmmaPrefillAttention, cudaFuncAttributeMaxDynamicSharedMemorySize, kWmmaSmem);
  if (opted != cudaSuccess) return opted;
  WmmaPrefillAttention<<<dim3(p.heads, p.num_tiles), 128, kWmmaSmem, stream>>>(p);
  return cudaGetLastError();
}

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

  auto run =
      [&](const char* version, int tile_size,
          const std::function<cudaError_t(const PrefillAttentionParams&, cudaStream_t)>& launch) {
        if (!args.Wants(std::string("prefill_attention ") + version + " " + c.name)) return;
        const std::vector<int32_t> tiles = Tiles(c, tile_size);
        DeviceBuffer tiles_d = upload_ints(tiles);
        PrefillAttentionParams q = p;
        q.tiles = tiles_d.as<int32_t>();
        q.num_tiles = static_cast<int>(tiles.size() / 2);
        Row row{"prefill_attention", version, c.name, c.rows, t};
        row.bytes = bytes;
        out_d.Poison();
        WB_CHECK_CUDA(launch(q, nullptr));
        WB_CHECK_CUDA(cudaDeviceSynchronize());
        row.check = Compare(Download(out_d.get(), ref.size(), t), ref, tol);
        row.us = TimeGraph([&](cudaStream_t s, int) { WB_CHECK_CUDA(launch(q, s)); }, 10);
        PrintRow(d, row);
      };
  run("engine", cuda::kPrefillQueryTile, cuda::LaunchPrefillAttention);
  if (t == DType::kBFloat16) run("wmma", kWmmaQueries, LaunchWmma);
}

}  // namespace
}  // namespace nanoserve::workbench

int main(int argc, char** argv) {
  using namespace nanoserve::workbench;
  const Args args = ParseArgs(argc, argv);
  const Device d = OpenDevice();
  const std::vector<Case> cases = {{"1x900", 1, 0, 900},
                                   {"64x128", 64, 0, 128},
                                   {"32x(896+54)", 32, 896, 54},
                                   {"32x950", 32, 0, 950}};
  for (const Case& c : cases) {
    if (args.quick && c.rows * (c.cached + c.queries) > 20000) continue;
    for (DType t : {DType::kBFloat16, DType::kFloat}) RunCase(d, args, t, c);
  }
  return 0;
}
