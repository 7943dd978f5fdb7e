// Helper kernels of the temporal conv shared between csrc/temporal_conv.cu (the cuBLAS GEMM
// orchestration) and csrc/conv_reductions.cu (the kernels). Not part of the public launcher API.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "tfaa_kernels.h"

namespace tfaa {

// y (N, C_out, HW) in s's layout: every element set to bias[channel].
cudaError_t conv_bias_fill(int dtype, const void* bias, void* y, const TfaaConvShape& s,
                           cudaStream_t stream);

// dweight[co, ci, t] (C_out, C_in, K contiguous, dtype) = sum_{j < slots(t)} ws[t][j][co][ci],
// ws fp32 laid out (K, max_slots, C_out, C_in); slots(t) = dweight_slots(s, t, max_slots).

cudaError_t conv_dweight_reduce(int dtype, const float* ws, void* dweight, int64_t max_slots,
                                const TfaaConvShape& s, cudaStream_t stream);

// Output frames [first, end) of a clip that tap t reads from (frame f reads f + t - K/2).
__host__ __device__ inline void tap_frames(const TfaaConvShape& s, int64_t t, int64_t& first, int64_t& end) {
  const int64_t p = s.taps / 2;
  first = p - t > 0 ? p - t : 0;
  end = s.num_frames + p - t < s.num_frames ? s.num_frames + p - t : s.num_frames;
  if (end < first) end = first;
}

// Partial matrices tap t fills: its items (clip, frame using tap t) are batched along the longer
// of the two axes, at most max_slots at a time; 0 when no frame uses tap t.
__host__ __device__ inline int64_t dweight_slots(const TfaaConvShape& s, int64_t t, int64_t max_slots) {
  int64_t first, end;
  tap_frames(s, t, first, end);
  const int64_t nf = end - first;
  if (nf <= 0) return 0;
  const int64_t clips = s.batch_frames / s.num_frames;
  const int64_t axis = clips > nf ? clips : nf;
  return axis < max_slots ? axis : max_slots;
}

}  // namespace tfaa
