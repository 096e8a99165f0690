// Decode attention over paged K/V (each row's block table), split over the
// key length (flash-decoding): DecodeAttentionSplitKernel computes, for one
// (head, row, key range), the range's max score m, sum of exp(score - m) l
// and the weighted sum of values acc; DecodeAttentionCombineKernel merges the
// ranges of a (head, row) into the output.
#include <algorithm>
#include <type_traits>

#include "engine/cuda/common.cuh"

namespace nanoserve::cuda {
namespace {

constexpr int kThreads = 128;  // keys scored per tile: one per thread

// q · k over head_dim (kD, or head_dim when kD is 0), q already scaled, in
// shared memory. Independent 16-byte loads, so that they overlap.
template <typename T, int kD>
__device__ __forceinline__ float Dot(const float* q, const T* k, int head_dim) {
  constexpr int kVec = 16 / sizeof(T);  // elements per 16-byte load
  if constexpr (kD > 0 && kD % kVec == 0) {
    float s[kD / kVec] = {};
#pragma unroll
    for (int c = 0; c < kD / kVec; ++c) {
      const uint4 raw = *reinterpret_cast<const uint4*>(k + c * kVec);
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int i = 0; i < kVec; ++i) s[c] += q[c * kVec + i] * ToFloat(e[i]);
    }
    float total = 0.0f;
#pragma unroll
    for (int c = 0; c < kD / kVec; ++c) total += s[c];
    return total;
  } else {
    float s0 = 0.0f, s1 = 0.0f;
    int d = 0;
    for (; d + 1 < head_dim; d += 2) {
      s0 += q[d] * ToFloat(k[d]);
      s1 += q[d + 1] * ToFloat(k[d + 1]);
    }
    if (d < head_dim) s0 += q[d] * ToFloat(k[d]);
    return s0 + s1;
  }
}

// Partial results, per (row, head, slot): [m, l, acc[0..head_dim)]; slots
// 0..splits-1 this kernel's, then the shared-prefix pass's.
__device__ __forceinline__ float* Partial(const DecodeAttentionParams& p, int b, int h, int s) {
  return p.workspace + ((static_cast<int64_t>(b) * p.heads + h) * (p.splits + p.shared_slots) + s) *
                           (p.head_dim + 2);
}

template <typename T, int kD, bool kWideValues>
__global__ void __launch_bounds__(kThreads) DecodeAttentionSplitKernel(DecodeAttentionParams p) {
  const int h = blockIdx.x, b = blockIdx.y, s = blockIdx.z;
  const int D = kD > 0 ? kD : p.head_dim, C = p.heads * D;
  const int L = p.lengths[b];  // keys 0..L-1 cached, key L is the new token's
  const int total = L + 1;
  // Keys before key_begin[b] are the shared-prefix pass's.
  const int first = p.key_begin != nullptr ? min(p.key_begin[b], L) : 0;
  const int chunk = max((total - first + p.splits - 1) / p.splits, p.min_chunk);
  const int begin = min(first + s * chunk, total), end = min(begin + chunk, total);
  if (begin == end) {  // past the row's keys: an empty range, for the combine to skip
    if (threadIdx.x == 0) {
      float* out = Partial(p, b, h, s);
      out[0] = -INFINITY;
      out[1] = 0.0f;
    }
    return;
  }

  const T* row = static_cast<const T*>(p.qkv) + static_cast<int64_t>(b) * 3 * C;
  const T* q = row + h * D;
  const T* k_new = row + C + h * D;
  const T* v_new = row + 2 * C + h * D;
  // Key j of this (row, head): its page from the block table, then offset.
  const int32_t* table =
      p.block_table +
      static_cast<int64_t>(p.table_row != nullptr ? p.table_row[b] : b) * p.max_pages;
  const int own = p.append ? L : -1;  // the key taken from qkv, if any
  const int64_t head_offset = static_cast<int64_t>(h) * p.page_size * D;
  auto at = [&](const int j) {
    return table[j / p.page_size] * p.page_stride + head_offset +
           static_cast<int64_t>(j % p.page_size) * D;
  };
  T* k_pages = static_cast<T*>(p.k_pages);
  T* v_pages = static_cast<T*>(p.v_pages);

  __shared__ float q_s[kMaxHeadDim];
  __shared__ float p_s[kThreads];
  __shared__ float scratch[32];
  __shared__ float acc_s[kThreads * 8];  // kGroups x head_dim = kThreads x kVec <= 1024
  for (int d = threadIdx.x; d < D; d += kThreads) q_s[d] = ToFloat(q[d]) * p.scale;
  // The block holding position L stores the new key and value; every block
  // reads key L from qkv, so no block waits for this write.
  if (p.append && begin <= L && L < end) {
    const int64_t new_at = at(L);
    for (int d = threadIdx.x; d < D; d += kThreads) {
      k_pages[new_at + d] = k_new[d];
      v_pages[new_at + d] = v_new[d];
    }
  }
  __syncthreads();

  // Values. Where head_dim is known and a multiple of a 16-byte load, thread t
  // adds up the kVec dimensions [kVec * (t % kLanes), +kVec) of keys t / kLanes,
  // t / kLanes + kGroups, ...: each key's value is read by kLanes threads in
  // 16-byte loads (a bf16 head of 64 by 8 threads, 16 keys at once). Else,
  // thread t adds up dimension t % D over keys t / D, t / D + groups, ...
  constexpr int kVec = 16 / sizeof(T);
  constexpr bool kVectorValues = kWideValues && kD > 0 && kD % kVec == 0 && kD / kVec <= kThreads;
  constexpr int kLanes = kVectorValues ? kD / kVec : 1;
  constexpr int kGroups = kThreads / kLanes;
  const int lane = threadIdx.x % kLanes, key_group = threadIdx.x / kLanes;
  const int groups = max(kThreads / D, 1);
  const int dim = threadIdx.x % D, group = threadIdx.x / D;
  const bool sums_values = group < groups;
  float m = -INFINITY, l = 0.0f, acc = 0.0f;
  float acc_v[kVectorValues ? kVec : 1] = {};
  for (int tile = begin; tile < end; tile += kThreads) {
    const int j = tile + threadIdx.x;
    float score = -INFINITY;
    if (j < end) {
      score = Dot<T, kD>(q_s, j == own ? k_new : k_pages + at(j), D);
    }
    const float m_new = fmaxf(m, BlockReduce<true>(score, scratch));
    const float weight = j < end ? __expf(score - m_new) : 0.0f;
    p_s[threadIdx.x] = weight;
    const float rescale = __expf(m - m_new);                // 0 on the first tile
    l = l * rescale + BlockReduce<false>(weight, scratch);  // syncs: p_s is complete
    const int n = min(kThreads, end - tile);
    if constexpr (kVectorValues) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc_v[i] *= rescale;
      // Four keys at a time: their loads are independent and overlap.
      auto value = [&](const int jj) {
        const int key = tile + jj;
        const T* v = (key == own ? v_new : v_pages + at(key)) + lane * kVec;
        return *reinterpret_cast<const uint4*>(v);
      };
      auto add = [&](const uint4& raw, const float w) {
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc_v[i] += w * ToFloat(e[i]);
      };
      int jj = key_group;
      for (; jj + 3 * kGroups < n; jj += 4 * kGroups) {
        const uint4 r0 = value(jj), r1 = value(jj + kGroups), r2 = value(jj + 2 * kGroups),
                    r3 = value(jj + 3 * kGroups);
        add(r0, p_s[jj]);
        add(r1, p_s[jj + kGroups]);
        add(r2, p_s[jj + 2 * kGroups]);
        add(r3, p_s[jj + 3 * kGroups]);
      }
      for (; jj < n; jj += kGroups) add(value(jj), p_s[jj]);
    } else {
      acc *= rescale;
      if (sums_values) {
        // Eight keys at a time: their loads are independent and overlap.
        constexpr int kUnroll = 8;
        float part[kUnroll] = {};
        int jj = group;
        for (; jj + (kUnroll - 1) * groups < n; jj += kUnroll * groups) {
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const int key = tile + jj + u * groups;
            const T* v = key == own ? v_new : v_pages + at(key);
            part[u] += p_s[jj + u * groups] * ToFloat(v[dim]);
          }
        }
        for (; jj < n; jj += groups) {
          const int key = tile + jj;
          const T* v = key == own ? v_new : v_pages + at(key);
          part[0] += p_s[jj] * ToFloat(v[dim]);
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) acc += part[u];
      }
    }
    m = m_new;
    __syncthreads();  // p_s is rewritten by the next tile
  }
  // The groups' sums of each dimension, then their total into the partial.
  float* out = Partial(p, b, h, s);
  if constexpr (kVectorValues) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc_s[key_group * kD + lane * kVec + i] = acc_v[i];
    __syncthreads();
    if (threadIdx.x < kD) {
      float total_acc = 0.0f;
      for (int g = 0; g < kGroups; ++g) total_acc += acc_s[g * kD + threadIdx.x];
      out[2 + threadIdx.x] = total_acc;
    }
  } else {
    acc_s[threadIdx.x] = sums_values ? acc : 0.0f;
    __syncthreads();
    if (threadIdx.x < D) {
      float total_acc = 0.0f;
      for (int g = 0; g < groups; ++g) total_acc += acc_s[g * D + threadIdx.x];
      out[2 + threadIdx.x] = total_acc;
    }
  }
  if (threadIdx.x == 0) {
    out[0] = m;
    out[1] = l;
  }
}

template <typename T>
__global__ void DecodeAttentionCombineKernel(DecodeAttentionParams p) {
  const int h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
  if (d >= p.head_dim) return;
  // The shared-prefix pass's slots too, for a row it took keys of.
  const int slots = p.splits + (p.key_begin != nullptr && p.key_begin[b] > 0 ? p.shared_slots : 0);
  float m = -INFINITY;
  for (int s = 0; s < slots; ++s) m = fmaxf(m, Partial(p, b, h, s)[0]);
  float l = 0.0f, acc = 0.0f;
  for (int s = 0; s < slots; ++s) {
    const float* part = Partial(p, b, h, s);
    if (part[0] == -INFINITY) continue;  // an empty range
    const float w = __expf(part[0] - m);
    l += part[1] * w;
    acc += part[2 + d] * w;
  }
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(b) * p.heads * p.head_dim;
  out[h * p.head_dim + d] = FromFloat<T>(acc / l);
}

}  // namespace

int DecodeAttentionSplits(int batch, int heads, int capacity, int num_sms) {
  const int blocks = std::max(batch * heads, 1);
  // At least four blocks per SM, and ranges of at most ~128 keys at full
  // capacity; no range shorter than 16 keys at full capacity.
  const int for_sms = (4 * num_sms + blocks - 1) / blocks;
  const int for_length = (capacity + 127) / 128;
  return std::max(1, std::min(std::max(for_sms, for_length), std::max(capacity / 16, 1)));
}

int DecodeAttentionMinChunk(int batch, int heads, int num_sms) {
  return batch * heads >= num_sms ? kThreads : 32;
}

size_t DecodeAttentionWorkspaceFloats(int batch, int heads, int splits, int head_dim) {
  return static_cast<size_t>(batch) * heads * splits * (head_dim + 2);
}

cudaError_t LaunchDecodeAttention(const DecodeAttentionParams& p, cudaStream_t stream) {
  if (p.batch <= 0) return cudaSuccess;
  if (p.heads <= 0 || p.head_dim <= 0 || p.head_dim > kMaxHeadDim || p.splits <= 0 ||
      p.page_size <= 0 || p.max_pages <= 0 || p.page_stride <= 0 || p.min_chunk <= 0 ||
      p.shared_slots < 0) {
    return cudaErrorInvalidValue;
  }
  return DispatchDType(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    const dim3 grid(p.heads, p.batch, p.splits);
    auto launch = [&](auto wide) {
      constexpr bool kWide = decltype(wide)::value;
      switch (p.head_dim) {  // GPT-2's 64, and what the tests use, unrolled
        case 16:
          DecodeAttentionSplitKernel<T, 16, kWide><<<grid, kThreads, 0, stream>>>(p);
          break;
        case 64:
          DecodeAttentionSplitKernel<T, 64, kWide><<<grid, kThreads, 0, stream>>>(p);
          break;
        case 128:
          DecodeAttentionSplitKernel<T, 128, kWide><<<grid, kThreads, 0, stream>>>(p);
          break;
        default:
          DecodeAttentionSplitKernel<T, 0, false><<<grid, kThreads, 0, stream>>>(p);
      }
    };
    if (p.vector_values) {
      launch(std::true_type());
    } else {
      launch(std::false_type());
    }
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    const int threads = ((p.head_dim + 31) / 32) * 32;
    DecodeAttentionCombineKernel<T><<<dim3(p.heads, p.batch), threads, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace nanoserve::cuda
