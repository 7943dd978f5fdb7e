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
// ws fp32 laid out (K, max_slots, C_out, C_in); slots(t) = fixed_slots when > 0, else
// dweight_slots(s, t, max_slots) (the cuBLAS path's).
cudaError_t conv_dweight_reduce(int dtype, const float* ws, void* dweight, int64_t max_slots,
                                const TfaaConvShape& s, cudaStream_t stream, int64_t fixed_slots = 0);

// The channels_last forward as one implicit-GEMM kernel on Hopper tensor cores (conv_wgmma.cu),
// taken when all three hold: conv_wgmma_shape_ok (channels_last, bf16/fp16, channel counts
// multiples of 8, TMA's int32 coordinates), conv_wgmma_pointers_ok (16-byte aligned x, wk, y) and
// conv_wgmma_device_ok (the current device runs this build's sm_90a code; probed once per device,
// outside stream capture). wk: the weight in TFAA_W_OTR layout.
bool conv_wgmma_shape_ok(int dtype, const TfaaConvShape& s);
bool conv_wgmma_pointers_ok(const void* x, const void* wk, const void* bias, const void* y);
bool conv_wgmma_device_ok(cudaStream_t stream);
cudaError_t conv_cl_wgmma_fwd(int dtype, const void* x, const void* wk, const void* bias, void* y,
                              const TfaaConvShape& s, cudaStream_t stream);

// The NCHW weight gradient on the same mainloop: fp32 partials ws[t][j] (layout of
// conv_dweight_reduce) for j < splits, each the sum over its share of tap t's (clip, frame) items;
// conv_wgmma_dweight_splits picks splits <= max_slots to fill one wave. Shape rule: NCHW,
// bf16/fp16, HW % 8 == 0 (TMA row strides); dy and x 16-byte aligned; device as above.
bool conv_wgmma_dweight_shape_ok(int dtype, const TfaaConvShape& s);
int64_t conv_wgmma_dweight_splits(const TfaaConvShape& s, int64_t max_slots);
cudaError_t conv_nchw_wgmma_dweight(int dtype, const void* dy, const void* x, float* ws, int64_t max_slots,
                                    int64_t splits, const TfaaConvShape& s, cudaStream_t stream);

// Output frames [first, end) of a clip that tap t reads from (frame f reads f + t - K/2).
__host__ __device__ inline void tap_frames(const TfaaConvShape& s, int64_t t, int64_t& first, int64_t& end) {
  const int64_t p = s.taps / 2;
  first = p - t > 0 ? p - t : 0;
  end = s.num_frames + p - t < s.num_frames ? s.num_frames + p - t : s.num_frames;
  if (end < first) end = first;
}

// Whether a GEMM over nf consecutive frames of a clip (the frames one tap covers) folds them into
// one matrix: in channels_last those frames are one (C x nf*HW) column-major matrix (frames
// adjacent, ld C), so one GEMM covers them (N = nf*HW in the forward, the reduction K = nf*HW in the weight
// gradient) while nf*HW fits cuBLAS's int; NCHW frames (C x HW blocks) do not fold.
__host__ __device__ inline bool folds_frames(const TfaaConvShape& s, int64_t nf) {
  return s.channels_last && nf * s.hw <= 0x7fffffff;
}

// Whether the weight gradient folds a tap's nf frames of a clip (one GEMM a clip, reduction
// nf*HW): only while the clips' (C_in x C_out) outputs still give a wave's worth of 128 x 128
// tiles (kDweightFoldMinTiles) without cuBLAS splitting the reduction. H100, bf16 (S14-runs 3, 4,
// GPU time): at 16x16 C1280 (2 clips x 100 tiles) folding took the channels_last conv's
// forward+backward from 0.792 to 0.478 ms; at 64x64 C320 (2 x 9 tiles) from 0.937 to 1.081 ms,
// so there each frame stays an item of reduction HW.
constexpr int64_t kDweightFoldMinTiles = 128;

__host__ __device__ inline bool dweight_folds(const TfaaConvShape& s, int64_t nf) {
  const int64_t clips = s.batch_frames / s.num_frames;
  return folds_frames(s, nf) && clips * ((s.c_in + 127) / 128) * ((s.c_out + 127) / 128) >= kDweightFoldMinTiles;
}

// Partial matrices tap t fills: its items (clip, frame using tap t; with dweight_folds one item per
// clip) are batched along the longer of the two axes, at most max_slots at a time; 0 when no frame
// uses tap t.
__host__ __device__ inline int64_t dweight_slots(const TfaaConvShape& s, int64_t t, int64_t max_slots) {
  int64_t first, end;
  tap_frames(s, t, first, end);
  const int64_t nf = end - first;
  if (nf <= 0) return 0;
  const int64_t clips = s.batch_frames / s.num_frames;
  const int64_t axis = dweight_folds(s, nf) || clips > nf ? clips : nf;
  return axis < max_slots ? axis : max_slots;
}

}  // namespace tfaa
