// Elementwise and reduction kernels of the temporal conv: the bias pre-fill of the forward, the
// tap-major weight copies the GEMMs read, the sum of the weight-gradient partial matrices, and the
// bias gradient. All deterministic (fixed reduction order, no atomics), fp32 accumulation, int64
// indexing.
//
// Layouts: y / dy are (N, C, HW) per frame, NCHW (element (n, c, i) at (n*C + c)*HW + i) or
// channels_last (at (n*HW + i)*C + c), contiguous.
#include <cstdint>

#include "conv_internal.h"
#include "tfaa_kernels.h"
#include "vec_io.cuh"

namespace tfaa {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t work, int64_t per_block) {
  int64_t g = (work + per_block - 1) / per_block;
  if (g < 1) g = 1;
  if (g > 65535ll * 32) g = 65535ll * 32;  // grid-stride loops cover the rest
  return static_cast<unsigned>(g);
}

// ------------------------------------------------------------------ bias pre-fill
// y seen as `rows` rows of `row_len` elements: NCHW rows are (n, c) planes of HW pixels (one bias
// value per row), channels_last rows are pixels of C channels (bias[c] along the row). One warp
// per row, each lane writing VEC consecutive elements per step (a 16-byte store when VEC > 1).
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
bias_fill_kernel(const T* __restrict__ bias, T* __restrict__ y, int64_t rows, int64_t row_len,
                 int64_t C, bool channels_last) {
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
  const int64_t nwarps = (int64_t)gridDim.x * blockDim.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t chunks = row_len / VEC;
  for (int64_t row = warp; row < rows; row += nwarps) {
    T* yr = y + row * row_len;
    if (!channels_last) {
      const float b = to_f(bias[row % C]);
      float v[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) v[j] = b;
      for (int64_t ch = lane; ch < chunks; ch += 32) store_vec<T, VEC>(yr + ch * VEC, v);
    } else {
      for (int64_t ch = lane; ch < chunks; ch += 32) {
        float v[VEC];
#pragma unroll
        for (int j = 0; j < VEC; ++j) v[j] = to_f(bias[ch * VEC + j]);
        store_vec<T, VEC>(yr + ch * VEC, v);
      }
    }
  }
}

template <typename T>
cudaError_t bias_fill_typed(const void* bias, void* y, const TfaaConvShape& s, cudaStream_t st) {
  constexpr int V = 16 / static_cast<int>(sizeof(T));
  const int64_t rows = s.channels_last ? s.batch_frames * s.hw : s.batch_frames * s.c_out;
  const int64_t row_len = s.channels_last ? s.c_out : s.hw;
  if (rows == 0 || row_len == 0) return cudaSuccess;
  const bool vec = reinterpret_cast<uintptr_t>(y) % 16 == 0 && row_len % V == 0;
  const unsigned grid = grid_for(rows * 32, kThreads);
  if (vec) {
    bias_fill_kernel<T, V><<<grid, kThreads, 0, st>>>(static_cast<const T*>(bias),
                                                      static_cast<T*>(y), rows, row_len, s.c_out,
                                                      s.channels_last);
  } else {
    bias_fill_kernel<T, 1><<<grid, kThreads, 0, st>>>(static_cast<const T*>(bias),
                                                      static_cast<T*>(y), rows, row_len, s.c_out,
                                                      s.channels_last);
  }
  return cudaGetLastError();
}

// ------------------------------------------------------------------ dweight partial sums
// dweight[(co*C_in + ci)*K + t] = sum_{j < slots(t)} ws[((t*max_slots + j)*C_out + co)*C_in + ci],
// slots(t) = fixed_slots if > 0 else dweight_slots(t)
template <typename T>
__global__ void __launch_bounds__(kThreads)
dweight_reduce_kernel(const float* __restrict__ ws, T* __restrict__ dw, int64_t max_slots,
                      TfaaConvShape s, int64_t fixed_slots) {
  const int64_t cc = s.c_out * s.c_in;
  const int64_t total = cc * s.taps;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i % s.taps;
    const int64_t e = i / s.taps;  // co*C_in + ci
    const int64_t slots = fixed_slots > 0 ? fixed_slots : dweight_slots(s, t, max_slots);
    float acc = 0.f;
    for (int64_t j = 0; j < slots; ++j) acc += ws[(t * max_slots + j) * cc + e];
    dw[i] = from_f<T>(acc);
  }
}

// ------------------------------------------------------------------ weight relayout
// One thread per (co, ci): reads the K taps W[co][ci][0..K) (consecutive threads, consecutive
// memory) and writes each to its tap's plane, consecutive threads writing consecutive ci.
//   OTR: out[(co*K + t)*C_in + ci]          TRO (flipped): out[((K-1-t)*C_out + co)*C_in + ci]
template <typename T>
__global__ void __launch_bounds__(kThreads)
weight_relayout_kernel(const T* __restrict__ w, T* __restrict__ out, int64_t C_out, int64_t C_in,
                       int64_t K, bool tro) {
  const int64_t total = C_out * C_in;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t co = i / C_in, ci = i - co * C_in;
    const T* src = w + i * K;
    for (int64_t t = 0; t < K; ++t) {
      const int64_t o = tro ? ((K - 1 - t) * C_out + co) * C_in + ci : (co * K + t) * C_in + ci;
      out[o] = src[t];
    }
  }
}

// OTR_DGRAD: out[(ci*K + K-1-t)*C_out + co] = W[co][ci][t]. A (co, ci) transpose per tap: block
// (32 x 8 threads) moves a 32 x 32 (co, ci) tile of every tap through shared memory, reading
// consecutive ci and writing consecutive co.
template <typename T>
__global__ void __launch_bounds__(256)
weight_relayout_dgrad_kernel(const T* __restrict__ w, T* __restrict__ out, int64_t C_out,
                             int64_t C_in, int64_t K) {
  __shared__ T tile[32][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t co0 = static_cast<int64_t>(blockIdx.x) * 32, ci0 = static_cast<int64_t>(blockIdx.y) * 32;
  const int rows_co = C_out - co0 < 32 ? static_cast<int>(C_out - co0) : 32;  // tile extent
  const int rows_ci = C_in - ci0 < 32 ? static_cast<int>(C_in - ci0) : 32;
  const T* src = w + (co0 * C_in + ci0 + tx) * K;  // (co0 + r, ci0 + tx), tap 0
  T* dst = out + (ci0 * K + K - 1) * C_out + co0 + tx;  // (ci0 + r, tap K-1-0, co0 + tx)
  for (int64_t t = 0; t < K; ++t) {
#pragma unroll 1
    for (int r = ty; r < 32; r += 8)
      if (r < rows_co && tx < rows_ci) tile[r][tx] = src[r * C_in * K + t];
    __syncthreads();
#pragma unroll 1
    for (int r = ty; r < 32; r += 8)
      if (r < rows_ci && tx < rows_co) dst[r * K * C_out - t * C_out] = tile[tx][r];
    __syncthreads();
  }
}

template <typename T>
cudaError_t weight_relayout_typed(const void* w, void* out, int64_t c_out, int64_t c_in,
                                  int64_t taps, int layout, cudaStream_t st) {
  const int64_t total = c_out * c_in;
  if (total == 0 || taps == 0) return cudaSuccess;
  if (layout == TFAA_W_OTR_DGRAD) {
    const int64_t gx = (c_out + 31) / 32, gy = (c_in + 31) / 32;
    if (gx > 0x7fffffff || gy > 65535) return cudaErrorInvalidValue;
    weight_relayout_dgrad_kernel<T><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(32, 8), 0, st>>>(
        static_cast<const T*>(w), static_cast<T*>(out), c_out, c_in, taps);
  } else {
    weight_relayout_kernel<T><<<grid_for(total, kThreads), kThreads, 0, st>>>(
        static_cast<const T*>(w), static_cast<T*>(out), c_out, c_in, taps, layout == TFAA_W_TRO);
  }
  return cudaGetLastError();
}

// ------------------------------------------------------------------ dbias
// NCHW: block (c, split) sums frames [n0, n1) x all HW pixels of channel c, VEC elements per load
// (16 bytes when the caller checked HW % VEC == 0 and 16-byte alignment of dy). The block's
// threads stride over (frame, chunk) pairs, so small frames (HW / VEC < kThreads chunks, e.g.
// 16x16: 32) still keep every thread loading.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
dbias_nchw_kernel(const T* __restrict__ dy, float* __restrict__ partial, int64_t N, int64_t C,
                  int64_t HW, int64_t splits) {
  const int64_t c = blockIdx.x;
  const int64_t split = blockIdx.y;
  const int64_t n0 = split * N / splits, n1 = (split + 1) * N / splits;
  const int64_t chunks = HW / VEC;
  const int64_t work = (n1 - n0) * chunks;
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < work; i += kThreads) {
    const int64_t n = n0 + i / chunks, ch = i % chunks;
    float v[VEC];
    load_vec<T, VEC>(dy + (n * C + c) * HW + ch * VEC, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc += v[j];
  }
  __shared__ float red[kThreads / 32];
  acc = group_sum(acc, 32);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int w = 0; w < kThreads / 32; ++w) t += red[w];
    partial[split * C + c] = t;
  }
}

// channels_last: dy is an (R = N*HW, C) row-major matrix. Block (32 channels x 8 row lanes).
template <typename T>
__global__ void __launch_bounds__(kThreads)
dbias_cl_kernel(const T* __restrict__ dy, float* __restrict__ partial, int64_t R, int64_t C,
                int64_t splits) {
  const int64_t c = blockIdx.x * 32 + threadIdx.x % 32;
  const int ty = threadIdx.x / 32;
  const int64_t split = blockIdx.y;
  const int64_t r0 = split * R / splits, r1 = (split + 1) * R / splits;
  float acc = 0.f;
  if (c < C)
    for (int64_t r = r0 + ty; r < r1; r += kThreads / 32) acc += to_f(dy[r * C + c]);
  __shared__ float red[kThreads / 32][32];
  red[ty][threadIdx.x % 32] = acc;
  __syncthreads();
  if (ty == 0 && c < C) {
    float t = 0.f;
    for (int w = 0; w < kThreads / 32; ++w) t += red[w][threadIdx.x % 32];
    partial[split * C + c] = t;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
dbias_final_kernel(const float* __restrict__ partial, T* __restrict__ dbias, int64_t C,
                   int64_t splits) {
  const int64_t c = blockIdx.x * (int64_t)kThreads + threadIdx.x;
  if (c >= C) return;
  float t = 0.f;
  for (int64_t j = 0; j < splits; ++j) t += partial[j * C + c];
  dbias[c] = from_f<T>(t);
}

// Row splits of the bias reduction: enough blocks to fill the GPU, at most one per frame (NCHW)
// or per 64 rows (channels_last).
int64_t dbias_splits(const TfaaConvShape& s) {
  if (s.channels_last) {
    const int64_t rows = s.batch_frames * s.hw;
    const int64_t col_blocks = (s.c_out + 31) / 32;
    int64_t sp = (1024 + col_blocks - 1) / col_blocks;
    const int64_t cap = (rows + 63) / 64;
    if (sp > cap) sp = cap;
    if (sp > 65535) sp = 65535;
    return sp < 1 ? 1 : sp;
  }
  int64_t sp = (1024 + s.c_out - 1) / (s.c_out > 0 ? s.c_out : 1);
  if (sp > s.batch_frames) sp = s.batch_frames;
  if (sp > 65535) sp = 65535;
  return sp < 1 ? 1 : sp;
}

template <typename T>
cudaError_t dbias_typed(const void* dy_, void* dbias_, float* ws, const TfaaConvShape& s,
                        cudaStream_t st) {
  const T* dy = static_cast<const T*>(dy_);
  T* dbias = static_cast<T*>(dbias_);
  if (s.c_out == 0) return cudaSuccess;
  const int64_t splits = dbias_splits(s);
  if (s.batch_frames == 0 || s.hw == 0) {
    const cudaError_t e = cudaMemsetAsync(ws, 0, splits * s.c_out * sizeof(float), st);
    if (e != cudaSuccess) return e;
  } else if (s.channels_last) {
    if ((s.c_out + 31) / 32 > 0x7fffffffLL) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>((s.c_out + 31) / 32), static_cast<unsigned>(splits));
    dbias_cl_kernel<T><<<grid, kThreads, 0, st>>>(dy, ws, s.batch_frames * s.hw, s.c_out, splits);
  } else {
    if (s.c_out > 0x7fffffffLL) return cudaErrorInvalidValue;
    constexpr int V = 16 / static_cast<int>(sizeof(T));
    const dim3 grid(static_cast<unsigned>(s.c_out), static_cast<unsigned>(splits));
    if (reinterpret_cast<uintptr_t>(dy) % 16 == 0 && s.hw % V == 0)
      dbias_nchw_kernel<T, V><<<grid, kThreads, 0, st>>>(dy, ws, s.batch_frames, s.c_out, s.hw, splits);
    else
      dbias_nchw_kernel<T, 1><<<grid, kThreads, 0, st>>>(dy, ws, s.batch_frames, s.c_out, s.hw, splits);
  }
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  dbias_final_kernel<T><<<static_cast<unsigned>((s.c_out + kThreads - 1) / kThreads), kThreads, 0,
                          st>>>(ws, dbias, s.c_out, splits);
  return cudaGetLastError();
}

}  // namespace

cudaError_t conv_bias_fill(int dtype, const void* bias, void* y, const TfaaConvShape& s,
                           cudaStream_t stream) {
  switch (dtype) {
    case TFAA_F32: return bias_fill_typed<float>(bias, y, s, stream);
    case TFAA_F16: return bias_fill_typed<__half>(bias, y, s, stream);
    case TFAA_BF16: return bias_fill_typed<__nv_bfloat16>(bias, y, s, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t conv_dweight_reduce(int dtype, const float* ws, void* dweight, int64_t max_slots,
                                const TfaaConvShape& s, cudaStream_t stream, int64_t fixed_slots) {
  const int64_t total = s.c_out * s.c_in * s.taps;
  if (total == 0) return cudaSuccess;
  const unsigned grid = grid_for(total, kThreads);
  switch (dtype) {
    case TFAA_F32:
      dweight_reduce_kernel<float><<<grid, kThreads, 0, stream>>>(
          ws, static_cast<float*>(dweight), max_slots, s, fixed_slots);
      break;
    case TFAA_F16:
      dweight_reduce_kernel<__half><<<grid, kThreads, 0, stream>>>(
          ws, static_cast<__half*>(dweight), max_slots, s, fixed_slots);
      break;
    case TFAA_BF16:
      dweight_reduce_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          ws, static_cast<__nv_bfloat16*>(dweight), max_slots, s, fixed_slots);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace tfaa

cudaError_t tfaa_conv_weight_relayout(int dtype, const void* weight, void* out, int64_t c_out,
                                      int64_t c_in, int64_t taps, int layout, cudaStream_t stream) {
  if (layout != TFAA_W_OTR && layout != TFAA_W_TRO && layout != TFAA_W_OTR_DGRAD) return cudaErrorInvalidValue;
  switch (dtype) {
    case TFAA_F32: return tfaa::weight_relayout_typed<float>(weight, out, c_out, c_in, taps, layout, stream);
    case TFAA_F16: return tfaa::weight_relayout_typed<__half>(weight, out, c_out, c_in, taps, layout, stream);
    case TFAA_BF16:
      return tfaa::weight_relayout_typed<__nv_bfloat16>(weight, out, c_out, c_in, taps, layout, stream);
    default: return cudaErrorInvalidValue;
  }
}

int64_t tfaa_conv_dbias_workspace_floats(TfaaConvShape s) {
  return tfaa::dbias_splits(s) * (s.c_out > 0 ? s.c_out : 0);
}

cudaError_t tfaa_temporal_conv1d_dbias(int dtype, const void* dy, void* dbias, float* workspace,
                                       TfaaConvShape s, cudaStream_t stream) {
  switch (dtype) {
    case TFAA_F32: return tfaa::dbias_typed<float>(dy, dbias, workspace, s, stream);
    case TFAA_F16: return tfaa::dbias_typed<__half>(dy, dbias, workspace, s, stream);
    case TFAA_BF16: return tfaa::dbias_typed<__nv_bfloat16>(dy, dbias, workspace, s, stream);
    default: return cudaErrorInvalidValue;
  }
}
