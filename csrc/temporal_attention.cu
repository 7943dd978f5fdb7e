// Temporal first-adjacent attention, forward and backward (DESIGN.md §1a, mode="temporal").
//
// Layout: q, k, v, dout are (B*F, L, H, D) with element strides (s_n, s_l, s_h, 1); outputs are
// (B*F, L, H, D) contiguous. A "row" is one (l, h) pair of a frame, rows = L*H, row r = l*H + h
// (token-major, so the heads of a token, adjacent in memory, go to adjacent threads).
//
// Work split (mirrors tfaa_kernels/triton/temporal_attention.py): one block owns one clip and
// THREADS / G rows, and walks the clip's F frames. A row's D elements are cut into chunks of VEC
// elements (16 bytes, or 1 element in the scalar fallback); a group of G lanes (a power of two
// <= 32) owns a row, lane j holding chunks j, j+G, ... (NC per lane). Frame 0's k/v stay in
// registers (fp32) for the whole clip, so every input element is read once and every output
// element written once. Dot products are reduced over the group with warp shuffles.
//
// Backward (recompute): per frame f, the gradient of the prev key goes to frame prev(f), that of
// the first key to frame 0. Frames g >= 1 get only frame g+1's prev contribution and are written
// directly; frame 0 accumulates in fp32 registers and is written once; the last frame (F >= 2) is
// nobody's prev and gets zeros. Deterministic, no atomics.
#include <cstdint>

#include "tfaa_kernels.h"
#include "vec_io.cuh"

namespace tfaa {
namespace {

// Threads per block: the forward (<= 64 registers) fits 4 blocks of 256 per SM; the backward
// (~96 registers, capped at 128 by the launch bounds) uses blocks of 128 so 5 fit (20 warps)
// instead of 2 of 256 (16 warps).
constexpr int kFwdThreads = 256;
constexpr int kBwdThreads = 128;

struct AttnArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* dout;  // backward only
  void* out;         // forward: out; backward: dq
  void* dk;
  void* dv;
  TfaaAttnStrides sq, sk, sv, sdo;
  int64_t rows;        // L * H
  int64_t H, D;
  int64_t row_blocks;  // ceil(rows / rows per block)
  int F;
  int group;    // G, lanes per row
  int nchunks;  // chunks of VEC elements per row
  float scale;
};

// This thread's row, lane and the in-frame offsets of its row in every tensor.
struct RowSlot {
  int64_t clip_n0;  // row n of frame 0 of the block's clip
  int64_t row;
  int lane;
  bool active;
};

template <int THREADS>
__device__ __forceinline__ RowSlot row_slot(const AttnArgs& a) {
  RowSlot s;
  const int rows_per_block = THREADS / a.group;
  const int64_t bid = blockIdx.x;
  const int64_t clip = bid / a.row_blocks;
  const int64_t rb = bid - clip * a.row_blocks;
  s.clip_n0 = clip * a.F;
  s.row = rb * rows_per_block + threadIdx.x / a.group;
  s.lane = threadIdx.x % a.group;
  s.active = s.row < a.rows;
  return s;
}

__device__ __forceinline__ int64_t row_offset(const TfaaAttnStrides& st, int64_t row, int64_t H) {
  const int64_t l = row / H;
  const int64_t h = row - l * H;
  return l * st.l + h * st.h;
}

// Load the NC chunks of this lane (zeros for chunks past D or inactive rows).
template <typename T, int VEC, int NC>
__device__ __forceinline__ void load_row(const T* __restrict__ base, int lane, int group,
                                         int nchunks, bool active, float (&x)[NC][VEC]) {
#pragma unroll
  for (int j = 0; j < NC; ++j) {
    const int c = lane + j * group;
    if (active && c < nchunks) {
      load_vec<T, VEC>(base + (int64_t)c * VEC, x[j]);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) x[j][i] = 0.f;
    }
  }
}

template <typename T, int VEC, int NC>
__device__ __forceinline__ void store_row(T* __restrict__ base, int lane, int group, int nchunks,
                                          bool active, const float (&x)[NC][VEC]) {
#pragma unroll
  for (int j = 0; j < NC; ++j) {
    const int c = lane + j * group;
    if (active && c < nchunks) store_vec<T, VEC>(base + (int64_t)c * VEC, x[j]);
  }
}

template <int VEC, int NC>
__device__ __forceinline__ float dot_part(const float (&a)[NC][VEC], const float (&b)[NC][VEC]) {
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < NC; ++j)
#pragma unroll
    for (int i = 0; i < VEC; ++i) s = fmaf(a[j][i], b[j][i], s);
  return s;
}

// Softmax of the two scaled scores: (weight of prev, weight of first).
__device__ __forceinline__ void two_key_probs(float s_prev, float s_first, float scale,
                                              float& w_prev, float& w_first) {
  s_prev *= scale;
  s_first *= scale;
  const float m = fmaxf(s_prev, s_first);
  const float e_prev = expf(s_prev - m);
  const float e_first = expf(s_first - m);
  const float inv = 1.f / (e_prev + e_first);
  w_prev = e_prev * inv;
  w_first = e_first * inv;
}

template <typename T, int VEC, int NC>
__global__ void __launch_bounds__(kFwdThreads) temporal_fwd_kernel(const AttnArgs a) {
  const RowSlot s = row_slot<kFwdThreads>(a);
  const T* __restrict__ q = static_cast<const T*>(a.q);
  const T* __restrict__ k = static_cast<const T*>(a.k);
  const T* __restrict__ v = static_cast<const T*>(a.v);
  T* __restrict__ out = static_cast<T*>(a.out);
  const int64_t oq = row_offset(a.sq, s.row, a.H);
  const int64_t ok = row_offset(a.sk, s.row, a.H);
  const int64_t ov = row_offset(a.sv, s.row, a.H);
  const int64_t oo = s.row * a.D;                 // out is contiguous
  const int64_t out_frame = a.rows * a.D;

  float k_first[NC][VEC], v_first[NC][VEC];
  load_row<T, VEC, NC>(k + s.clip_n0 * a.sk.n + ok, s.lane, a.group, a.nchunks, s.active, k_first);
  load_row<T, VEC, NC>(v + s.clip_n0 * a.sv.n + ov, s.lane, a.group, a.nchunks, s.active, v_first);

#pragma unroll 2
  for (int f = 0; f < a.F; ++f) {
    const int64_t n = s.clip_n0 + f;
    const int64_t p = s.clip_n0 + (f > 0 ? f - 1 : 0);
    float qx[NC][VEC], k_prev[NC][VEC], v_prev[NC][VEC];
    load_row<T, VEC, NC>(q + n * a.sq.n + oq, s.lane, a.group, a.nchunks, s.active, qx);
    load_row<T, VEC, NC>(k + p * a.sk.n + ok, s.lane, a.group, a.nchunks, s.active, k_prev);
    load_row<T, VEC, NC>(v + p * a.sv.n + ov, s.lane, a.group, a.nchunks, s.active, v_prev);
    const float s_prev = group_sum(dot_part<VEC, NC>(qx, k_prev), a.group);
    const float s_first = group_sum(dot_part<VEC, NC>(qx, k_first), a.group);
    float w_prev, w_first;
    two_key_probs(s_prev, s_first, a.scale, w_prev, w_first);
    float o[NC][VEC];
#pragma unroll
    for (int j = 0; j < NC; ++j)
#pragma unroll
      for (int i = 0; i < VEC; ++i) o[j][i] = w_prev * v_prev[j][i] + w_first * v_first[j][i];
    store_row<T, VEC, NC>(out + n * out_frame + oo, s.lane, a.group, a.nchunks, s.active, o);
  }
}

template <typename T, int VEC, int NC>
__global__ void __launch_bounds__(kBwdThreads, 4) temporal_bwd_kernel(const AttnArgs a) {
  const RowSlot s = row_slot<kBwdThreads>(a);
  const T* __restrict__ q = static_cast<const T*>(a.q);
  const T* __restrict__ k = static_cast<const T*>(a.k);
  const T* __restrict__ v = static_cast<const T*>(a.v);
  const T* __restrict__ dout = static_cast<const T*>(a.dout);
  T* __restrict__ dq = static_cast<T*>(a.out);
  T* __restrict__ dk = static_cast<T*>(a.dk);
  T* __restrict__ dv = static_cast<T*>(a.dv);
  const int64_t oq = row_offset(a.sq, s.row, a.H);
  const int64_t ok = row_offset(a.sk, s.row, a.H);
  const int64_t ov = row_offset(a.sv, s.row, a.H);
  const int64_t odo = row_offset(a.sdo, s.row, a.H);
  const int64_t og = s.row * a.D;                 // dq, dk, dv are contiguous
  const int64_t g_frame = a.rows * a.D;

  float k_first[NC][VEC], v_first[NC][VEC], dk_first[NC][VEC], dv_first[NC][VEC];
  load_row<T, VEC, NC>(k + s.clip_n0 * a.sk.n + ok, s.lane, a.group, a.nchunks, s.active, k_first);
  load_row<T, VEC, NC>(v + s.clip_n0 * a.sv.n + ov, s.lane, a.group, a.nchunks, s.active, v_first);
#pragma unroll
  for (int j = 0; j < NC; ++j)
#pragma unroll
    for (int i = 0; i < VEC; ++i) dk_first[j][i] = dv_first[j][i] = 0.f;

  for (int f = 0; f < a.F; ++f) {
    const int64_t n = s.clip_n0 + f;
    const int64_t p = s.clip_n0 + (f > 0 ? f - 1 : 0);
    float qx[NC][VEC], dox[NC][VEC], k_prev[NC][VEC], v_prev[NC][VEC];
    load_row<T, VEC, NC>(q + n * a.sq.n + oq, s.lane, a.group, a.nchunks, s.active, qx);
    load_row<T, VEC, NC>(dout + n * a.sdo.n + odo, s.lane, a.group, a.nchunks, s.active, dox);
    load_row<T, VEC, NC>(k + p * a.sk.n + ok, s.lane, a.group, a.nchunks, s.active, k_prev);
    load_row<T, VEC, NC>(v + p * a.sv.n + ov, s.lane, a.group, a.nchunks, s.active, v_prev);
    const float s_prev = group_sum(dot_part<VEC, NC>(qx, k_prev), a.group);
    const float s_first = group_sum(dot_part<VEC, NC>(qx, k_first), a.group);
    const float dp_prev = group_sum(dot_part<VEC, NC>(dox, v_prev), a.group);
    const float dp_first = group_sum(dot_part<VEC, NC>(dox, v_first), a.group);
    float w_prev, w_first;
    two_key_probs(s_prev, s_first, a.scale, w_prev, w_first);
    const float delta = w_prev * dp_prev + w_first * dp_first;
    const float ds_prev = w_prev * (dp_prev - delta) * a.scale;
    const float ds_first = w_first * (dp_first - delta) * a.scale;

    float g[NC][VEC];
#pragma unroll
    for (int j = 0; j < NC; ++j)
#pragma unroll
      for (int i = 0; i < VEC; ++i) g[j][i] = ds_prev * k_prev[j][i] + ds_first * k_first[j][i];
    store_row<T, VEC, NC>(dq + n * g_frame + og, s.lane, a.group, a.nchunks, s.active, g);

    const bool prev_is_first = f <= 1;
#pragma unroll
    for (int j = 0; j < NC; ++j)
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        dk_first[j][i] += ds_first * qx[j][i];
        dv_first[j][i] += w_first * dox[j][i];
      }
    if (prev_is_first) {
#pragma unroll
      for (int j = 0; j < NC; ++j)
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          dk_first[j][i] += ds_prev * qx[j][i];
          dv_first[j][i] += w_prev * dox[j][i];
        }
    } else {  // frame f-1 >= 1 receives exactly this one contribution
      float gk[NC][VEC], gv[NC][VEC];
#pragma unroll
      for (int j = 0; j < NC; ++j)
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          gk[j][i] = ds_prev * qx[j][i];
          gv[j][i] = w_prev * dox[j][i];
        }
      store_row<T, VEC, NC>(dk + p * g_frame + og, s.lane, a.group, a.nchunks, s.active, gk);
      store_row<T, VEC, NC>(dv + p * g_frame + og, s.lane, a.group, a.nchunks, s.active, gv);
    }
  }
  store_row<T, VEC, NC>(dk + s.clip_n0 * g_frame + og, s.lane, a.group, a.nchunks, s.active,
                        dk_first);
  store_row<T, VEC, NC>(dv + s.clip_n0 * g_frame + og, s.lane, a.group, a.nchunks, s.active,
                        dv_first);
  if (a.F >= 2) {  // the last frame's k/v are nobody's prev
    float z[NC][VEC];
#pragma unroll
    for (int j = 0; j < NC; ++j)
#pragma unroll
      for (int i = 0; i < VEC; ++i) z[j][i] = 0.f;
    const int64_t last = s.clip_n0 + a.F - 1;
    store_row<T, VEC, NC>(dk + last * g_frame + og, s.lane, a.group, a.nchunks, s.active, z);
    store_row<T, VEC, NC>(dv + last * g_frame + og, s.lane, a.group, a.nchunks, s.active, z);
  }
}

// ------------------------------------------------------------------ host side
bool aligned16(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) % 16) == 0; }

bool strides_divisible(const TfaaAttnStrides& s, int64_t vec) {
  return s.n % vec == 0 && s.l % vec == 0 && s.h % vec == 0;
}

int next_pow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

// Fills a.group / a.nchunks / a.row_blocks; returns NC (0: D too large) and whether VEC > 1 fits.
int plan(AttnArgs& a, int elem_size, bool vec_ok, int threads) {
  const int vec = vec_ok ? 16 / elem_size : 1;
  a.nchunks = static_cast<int>(a.D / vec);
  int nc = 1;
  while (a.nchunks > 32 * nc) nc <<= 1;
  if (nc > 8) return 0;
  a.group = nc == 1 ? next_pow2(a.nchunks) : 32;
  const int rows_per_block = threads / a.group;
  a.row_blocks = (a.rows + rows_per_block - 1) / rows_per_block;
  return nc;
}

template <typename T, bool BWD, int VEC, int NC>
cudaError_t launch_one(const AttnArgs& a, int64_t clips, cudaStream_t stream) {
  const int64_t blocks = clips * a.row_blocks;
  if (blocks <= 0) return cudaSuccess;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  if (BWD)
    temporal_bwd_kernel<T, VEC, NC><<<static_cast<unsigned>(blocks), kBwdThreads, 0, stream>>>(a);
  else
    temporal_fwd_kernel<T, VEC, NC><<<static_cast<unsigned>(blocks), kFwdThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, bool BWD>
cudaError_t launch_typed(AttnArgs& a, bool vec_ok, int64_t clips, cudaStream_t stream) {
  constexpr int V = 16 / static_cast<int>(sizeof(T));
  const int nc = plan(a, sizeof(T), vec_ok, BWD ? kBwdThreads : kFwdThreads);
  if (nc == 0) return cudaErrorInvalidValue;
  if (vec_ok) {  // D <= 256: at most 32 chunks of 8 (16-bit types) or 64 chunks of 4 (fp32)
    if (nc == 1) return launch_one<T, BWD, V, 1>(a, clips, stream);
    if constexpr (V == 4) {
      if (nc == 2) return launch_one<T, BWD, V, 2>(a, clips, stream);
    }
    return cudaErrorInvalidValue;
  }
  switch (nc) {
    case 1: return launch_one<T, BWD, 1, 1>(a, clips, stream);
    case 2: return launch_one<T, BWD, 1, 2>(a, clips, stream);
    case 4: return launch_one<T, BWD, 1, 4>(a, clips, stream);
    case 8: return launch_one<T, BWD, 1, 8>(a, clips, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <bool BWD>
cudaError_t launch(int dtype, AttnArgs& a, int64_t batch_frames, bool vec_ok_strides,
                   cudaStream_t stream) {
  if (a.D < 1 || a.D > TFAA_ATTN_MAX_D || a.F < 1 || batch_frames % a.F != 0)
    return cudaErrorInvalidValue;
  const int64_t clips = batch_frames / a.F;
  const void* ptrs[7] = {a.q, a.k, a.v, a.dout, a.out, a.dk, a.dv};
  bool ptr_ok = true;
  for (const void* p : ptrs) ptr_ok = ptr_ok && aligned16(p);
  switch (dtype) {
    case TFAA_F32: {
      const bool ok = ptr_ok && vec_ok_strides && a.D % 4 == 0 && strides_divisible(a.sq, 4) &&
                      strides_divisible(a.sk, 4) && strides_divisible(a.sv, 4) &&
                      (!BWD || strides_divisible(a.sdo, 4));
      return launch_typed<float, BWD>(a, ok, clips, stream);
    }
    case TFAA_F16: {
      const bool ok = ptr_ok && vec_ok_strides && a.D % 8 == 0 && strides_divisible(a.sq, 8) &&
                      strides_divisible(a.sk, 8) && strides_divisible(a.sv, 8) &&
                      (!BWD || strides_divisible(a.sdo, 8));
      return launch_typed<__half, BWD>(a, ok, clips, stream);
    }
    case TFAA_BF16: {
      const bool ok = ptr_ok && vec_ok_strides && a.D % 8 == 0 && strides_divisible(a.sq, 8) &&
                      strides_divisible(a.sk, 8) && strides_divisible(a.sv, 8) &&
                      (!BWD || strides_divisible(a.sdo, 8));
      return launch_typed<__nv_bfloat16, BWD>(a, ok, clips, stream);
    }
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace
}  // namespace tfaa

cudaError_t tfaa_temporal_attention_fwd(int dtype, const void* q, TfaaAttnStrides sq, const void* k,
                                        TfaaAttnStrides sk, const void* v, TfaaAttnStrides sv,
                                        void* out, int64_t batch_frames, int64_t num_frames,
                                        int64_t L, int64_t H, int64_t D, float scale,
                                        cudaStream_t stream) {
  tfaa::AttnArgs a{};
  a.q = q; a.k = k; a.v = v; a.dout = nullptr;
  a.out = out; a.dk = nullptr; a.dv = nullptr;
  a.sq = sq; a.sk = sk; a.sv = sv; a.sdo = sq;
  a.rows = L * H; a.H = H; a.D = D;
  a.F = static_cast<int>(num_frames);
  a.scale = scale;
  if (num_frames > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (a.rows == 0 || batch_frames == 0) return cudaSuccess;
  return tfaa::launch<false>(dtype, a, batch_frames, true, stream);
}

cudaError_t tfaa_temporal_attention_bwd(int dtype, const void* dout, TfaaAttnStrides sdo,
                                        const void* q, TfaaAttnStrides sq, const void* k,
                                        TfaaAttnStrides sk, const void* v, TfaaAttnStrides sv,
                                        void* dq, void* dk, void* dv, int64_t batch_frames,
                                        int64_t num_frames, int64_t L, int64_t H, int64_t D,
                                        float scale, cudaStream_t stream) {
  tfaa::AttnArgs a{};
  a.q = q; a.k = k; a.v = v; a.dout = dout;
  a.out = dq; a.dk = dk; a.dv = dv;
  a.sq = sq; a.sk = sk; a.sv = sv; a.sdo = sdo;
  a.rows = L * H; a.H = H; a.D = D;
  a.F = static_cast<int>(num_frames);
  a.scale = scale;
  if (num_frames > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (a.rows == 0 || batch_frames == 0) return cudaSuccess;
  return tfaa::launch<true>(dtype, a, batch_frames, true, stream);
}
