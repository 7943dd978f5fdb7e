// Host launchers of the tfaa CUDA kernels (DESIGN.md §1). CUDA headers only, no torch: the .cu
// files compile with plain nvcc; csrc/tfaa_ops.cpp is the PyTorch glue that calls these.
//
// Conventions
// - dtype codes: TFAA_F32 = 0, TFAA_F16 = 1, TFAA_BF16 = 2. Accumulation is always fp32.
// - Element strides are int64; every offset is computed in int64.
// - Every launcher enqueues on `stream`, checks each launch and returns the first error
//   (cudaSuccess when all is well). Nothing synchronizes.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

enum TfaaDtype : int { TFAA_F32 = 0, TFAA_F16 = 1, TFAA_BF16 = 2 };

// ------------------------------------------------------------ temporal first-adjacent attention
// q, k, v, dout: (B*F, L, H, D) with element strides (s_n, s_l, s_h, 1), row n = b*F + f.
// out, dq, dk, dv: (B*F, L, H, D) contiguous. prev(f) = max(f-1, 0); per (n, l, h):
//   out = softmax([q.k_prev, q.k_first] * scale) @ [v_prev, v_first].
struct TfaaAttnStrides {
  int64_t n, l, h;
};

// Largest head dim the kernels take (any D in [1, TFAA_ATTN_MAX_D]).
constexpr int TFAA_ATTN_MAX_D = 256;

cudaError_t tfaa_temporal_attention_fwd(int dtype, const void* q, TfaaAttnStrides sq, const void* k,
                                        TfaaAttnStrides sk, const void* v, TfaaAttnStrides sv,
                                        void* out, int64_t batch_frames, int64_t num_frames,
                                        int64_t L, int64_t H, int64_t D, float scale,
                                        cudaStream_t stream);

// Backward by recomputation. dk/dv of frames >= 1 are written directly, frame 0's accumulated in
// fp32 registers; the last frame's dk/dv are zero (F >= 2). Deterministic, no atomics.
cudaError_t tfaa_temporal_attention_bwd(int dtype, const void* dout, TfaaAttnStrides sdo,
                                        const void* q, TfaaAttnStrides sq, const void* k,
                                        TfaaAttnStrides sk, const void* v, TfaaAttnStrides sv,
                                        void* dq, void* dk, void* dv, int64_t batch_frames,
                                        int64_t num_frames, int64_t L, int64_t H, int64_t D,
                                        float scale, cudaStream_t stream);

// ------------------------------------------------------------ temporal conv1d (cuBLAS GEMMs)
// Status of a launcher that mixes kernels and cuBLAS calls: cuda == cudaSuccess and cublas == 0
// when all went well; `where` names the failing step.
struct TfaaStatus {
  cudaError_t cuda;
  int cublas;  // cublasStatus_t value
  const char* where;
};

// Geometry of a conv call. x: (N = B*F, C_in, HW) per frame, y: (N, C_out, HW), stored either
// NCHW (frame = C x HW row-major) or channels_last (frame = HW x C row-major); both contiguous,
// so consecutive frames are adjacent in memory.
struct TfaaConvShape {
  int64_t batch_frames;  // N = B*F
  int64_t num_frames;    // F
  int64_t c_in, c_out, hw;
  int64_t taps;          // K, odd
  bool channels_last;
};

// The GEMMs read the conv weight in one of two tap-major copies (R = reduction channels = s.c_in,
// O = output channels = s.c_out of the call), both made by tfaa_conv_weight_relayout:
//   TFAA_W_OTR: (O, K, R) contiguous, w[o][t][r] = W_t[o, r]   (the forward: weight.permute(0, 2, 1))
//   TFAA_W_TRO: (K, R, O) contiguous, w[t][r][o] = W_t[o, r]   (the input gradient, a forward of the
//               transposed conv: W'_s[ci, co] = W[co, ci, K-1-s] is weight.flip(2).permute(2, 0, 1))
enum TfaaWeightLayout : int { TFAA_W_OTR = 0, TFAA_W_TRO = 1 };
// tfaa_conv_weight_relayout only: the OTR copy for the input gradient's conv (R = C_out, O = C_in),
// (C_in, K, C_out) contiguous with the taps flipped, w[ci][s][co] = W[co, ci, K-1-s]; the forward
// launcher then reads it as TFAA_W_OTR.
constexpr int TFAA_W_OTR_DGRAD = 2;

// out = the copy of weight (C_out, C_in, K) contiguous that a GEMM of `layout` reads: for
// TFAA_W_OTR the forward's (C_out, K, C_in); for TFAA_W_TRO the input gradient's (K, C_out, C_in)
// with the taps flipped; for TFAA_W_OTR_DGRAD the input gradient's (C_in, K, C_out), taps flipped
// (a tiled transpose through shared memory). One pass, coalesced reads and writes (torch's strided permute copy of the
// same 9.8 MB weight measured ~26 us on an H100, ~4x the bandwidth time).
cudaError_t tfaa_conv_weight_relayout(int dtype, const void* weight, void* out, int64_t c_out,
                                      int64_t c_in, int64_t taps, int layout, cudaStream_t stream);

// Whether tfaa_temporal_conv1d_fwd runs this call as the Hopper implicit-GEMM kernel (TMA +
// wgmma, sm_90a) rather than cuBLAS GEMMs, given an OTR weight and 16-byte aligned tensors: a
// channels_last bf16/fp16 call with channel counts multiples of 8 on a device that runs this
// build's sm_90a code, unless the environment sets TFAA_CUDA_CONV_WGMMA=0. Cheap after the first
// call per device (which probes the device, outside stream capture).
bool tfaa_conv_fwd_uses_wgmma(int dtype, TfaaConvShape s, cudaStream_t stream);

// y[b,f] = bias + sum_t W_t @ x[b, f+t-K/2] (zero outside the clip).
// wk: the weight in `weight_layout` (see TfaaWeightLayout) for this call's c_in (R) and c_out (O).
// bias: (C_out,) or nullptr. cublas_handle: a cublasHandle_t (moved to `stream` if elsewhere).
TfaaStatus tfaa_temporal_conv1d_fwd(int dtype, const void* x, const void* wk, int weight_layout,
                                    const void* bias, void* y, TfaaConvShape s, void* cublas_handle,
                                    cudaStream_t stream);

// Whether tfaa_temporal_conv1d_dweight runs this call (given 16-byte aligned dy and x) as the
// Hopper TMA + wgmma kernel rather than cuBLAS GEMMs: NCHW bf16/fp16 with HW % 8 == 0, same device
// and TFAA_CUDA_CONV_WGMMA rules as the forward.
bool tfaa_conv_dweight_uses_wgmma(int dtype, TfaaConvShape s, cudaStream_t stream);

// dweight (C_out, C_in, K) contiguous = sum over clips/frames/pixels of dy_f x_{f+t-K/2}^T.
// workspace: fp32, tfaa_conv_dweight_workspace_floats(s) elements.
int64_t tfaa_conv_dweight_workspace_floats(TfaaConvShape s);
TfaaStatus tfaa_temporal_conv1d_dweight(int dtype, const void* dy, const void* x, void* dweight,
                                        float* workspace, TfaaConvShape s, void* cublas_handle,
                                        cudaStream_t stream);

// dbias (C_out,) = sum of dy over frames and pixels. workspace: fp32,
// tfaa_conv_dbias_workspace_floats(s) elements. Deterministic two-pass reduction.
int64_t tfaa_conv_dbias_workspace_floats(TfaaConvShape s);
cudaError_t tfaa_temporal_conv1d_dbias(int dtype, const void* dy, void* dbias, float* workspace,
                                       TfaaConvShape s, cudaStream_t stream);

// A cuBLAS handle of this library's own for the current device (created once per device), for
// builds where PyTorch's handle cannot be reached. Returns nullptr on failure.
void* tfaa_own_cublas_handle();
