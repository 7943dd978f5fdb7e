// temporal_conv1d forward and weight gradient as cuBLAS GEMMs on the native layout
// (DESIGN.md §1b). Nothing of x or y is rearranged, padded or concatenated: every GEMM reads
// frames in place through pointer arithmetic and leading dimensions.
//
// Layouts (N = B*F frames, each a contiguous matrix, consecutive frames adjacent in memory):
//   NCHW:          frame = (C, HW) row-major  = column-major (HW x C), ld HW
//   channels_last: frame = (HW, C) row-major  = column-major (C x HW), ld C
//   wk: the weight in one of the tap-major layouts of TfaaWeightLayout (tfaa_kernels.h): OTR
//   (O, K, R) for the forward, TRO (K, R, O) for the input gradient (R = reduction channels,
//   O = output channels of the call). Either is read in place through the GEMM's transpose flag.
//
// Forward, NCHW: the K input frames f-p .. f+p of a clip are adjacent, so stacked they are ONE
// column-major (HW x K*C_in) matrix: y_f^T = X_stack^T-window @ W^T is a single GEMM with the
// reduction over (tap, channel). At the clip ends the window shrinks to taps [t0, t1) (zero
// padding = leaving the out-of-clip taps out of the reduction). Frames sharing (t0, t1) form a
// range batched over (clip, frame) with strided-batched GEMMs.
// Forward, channels_last, bf16/fp16 on Hopper: one implicit-GEMM kernel (conv_wgmma.cu) when
// tfaa_conv_fwd_uses_wgmma says so. Otherwise (cuBLAS): one GEMM per tap, y_f += W_t @ x_{f+t-p}, the centre tap first
// (it covers every frame), the others accumulating with beta = 1. A clip's output frames of a tap
// are adjacent, so each (clip, tap) is one GEMM over nf*HW pixels (folds_frames).
// Bias: y is pre-filled with the bias and every GEMM accumulates (beta = 1).
//
// Weight gradient, NCHW bf16/fp16 on Hopper: conv_wgmma.cu's kernel (tfaa_conv_dweight_uses_wgmma)
// writes per-split fp32 partials, then the same deterministic reduction. Otherwise (cuBLAS):
// dW_t = sum over clips, frames f, pixels of dy_f x_{f+t-p}^T. The items (clip,
// frame) of tap t are spread over `slots` fp32 partial matrices along the longer item axis (frames
// of a clip, or clips), one strided-batched GEMM per chunk of that axis, beta = 1 after the first
// chunk; a deterministic kernel then sums the slots into dweight (C_out, C_in, K). In channels_last
// with wide channels (dweight_folds) an item is a whole clip: one GEMM reduces over its nf*HW pixels.
#include <cstdint>
#include <cstdlib>

#include "conv_internal.h"
#include "cublas_min.h"
#include "tfaa_kernels.h"

namespace tfaa {
namespace {

cudaDataType cuda_type(int dtype) {
  switch (dtype) {
    case TFAA_F16: return CUDA_R_16F;
    case TFAA_BF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

int64_t elem_size(int dtype) { return dtype == TFAA_F32 ? 4 : 2; }

TfaaStatus ok() { return TfaaStatus{cudaSuccess, 0, nullptr}; }

// A matrix operand of a batch of GEMMs over items (clip b, frame j): pointer of item (b, j) is
// base + b * clip_stride + j * frame_stride (elements).
struct Operand {
  const void* base;
  int64_t ld;
  int64_t clip_stride;
  int64_t frame_stride;
};

const void* offset(const void* base, int64_t elems, int64_t esize) {
  return static_cast<const char*>(base) + elems * esize;
}

// C(b, j) = alpha * op(A(b, j)) @ op(B(b, j)) + beta * C(b, j) for b < clips, j < frames.
// Batches the larger of the two item axes with strided-batched GEMMs and loops over the other.
TfaaStatus gemm_items(cublasHandle_t h, cudaDataType ab_type, int64_t ab_size, cudaDataType c_type,
                      int64_t c_size, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                      int64_t n, int64_t k, const Operand& A, const Operand& B, const Operand& C,
                      float beta, int64_t clips, int64_t frames, const char* where) {
  if (clips <= 0 || frames <= 0 || m <= 0 || n <= 0) return ok();
  const float alpha = 1.f;
  const bool batch_frames = frames >= clips;
  const int64_t loops = batch_frames ? clips : frames;
  const int64_t batch = batch_frames ? frames : clips;
  if (m > 0x7fffffff || n > 0x7fffffff || k > 0x7fffffff || batch > 0x7fffffff || A.ld > 0x7fffffff ||
      B.ld > 0x7fffffff || C.ld > 0x7fffffff)
    return TfaaStatus{cudaErrorInvalidValue, 0, where};
  const int64_t sa = batch_frames ? A.frame_stride : A.clip_stride;
  const int64_t sb = batch_frames ? B.frame_stride : B.clip_stride;
  const int64_t sc = batch_frames ? C.frame_stride : C.clip_stride;
  for (int64_t i = 0; i < loops; ++i) {
    const int64_t oa = batch_frames ? i * A.clip_stride : i * A.frame_stride;
    const int64_t ob = batch_frames ? i * B.clip_stride : i * B.frame_stride;
    const int64_t oc = batch_frames ? i * C.clip_stride : i * C.frame_stride;
    if (k <= 0) continue;  // nothing to add (callers never ask for an empty reduction with beta 0)
    const cublasStatus_t st = cublasGemmStridedBatchedEx(
        h, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), &alpha,
        offset(A.base, oa, ab_size), ab_type, static_cast<int>(A.ld), sa,
        offset(B.base, ob, ab_size), ab_type, static_cast<int>(B.ld), sb, &beta,
        const_cast<void*>(offset(C.base, oc, c_size)), c_type, static_cast<int>(C.ld), sc,
        static_cast<int>(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) return TfaaStatus{cudaSuccess, static_cast<int>(st), where};
  }
  return ok();
}

// The weight operand of tap t's (C_out x C_in) block, or of a window of taps starting at t:
// pointer, leading dimension, and whether the GEMM reads it transposed relative to OTR.
struct WeightView {
  const void* wk;
  bool tro;  // TFAA_W_TRO (else TFAA_W_OTR)
  int64_t ld(const TfaaConvShape& s) const { return tro ? s.c_out : s.taps * s.c_in; }
  const void* at(int64_t tap, const TfaaConvShape& s, int64_t es) const {
    return offset(wk, tap * (tro ? s.c_in * s.c_out : s.c_in), es);
  }
};

TfaaStatus fwd_nchw(cublasHandle_t h, int dtype, const void* x, const WeightView& w, void* y,
                    const TfaaConvShape& s, float beta) {
  const int64_t F = s.num_frames, K = s.taps, p = K / 2;
  const int64_t clips = s.batch_frames / F;
  const int64_t xf = s.c_in * s.hw, yf = s.c_out * s.hw;  // frame sizes
  const cudaDataType t = cuda_type(dtype);
  const int64_t es = elem_size(dtype);
  int64_t f = 0;
  while (f < F) {
    // frames [f, g) share the tap window [t0, t1)
    const int64_t t0 = p - f > 0 ? p - f : 0;
    const int64_t t1 = F + p - f < K ? F + p - f : K;
    int64_t g = f + 1;
    while (g < F && (p - g > 0 ? p - g : 0) == t0 && (F + p - g < K ? F + p - g : K) == t1) ++g;
    const Operand A{offset(x, (f + t0 - p) * xf, es), s.hw, F * xf, xf};
    // B = the window's weights as a (K'*C_in x C_out) matrix: OTR column-major, TRO its transpose
    const Operand B{w.at(t0, s, es), w.ld(s), 0, 0};
    const Operand C{offset(y, f * yf, es), s.hw, F * yf, yf};
    const TfaaStatus st = gemm_items(h, t, es, t, es, CUBLAS_OP_N, w.tro ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     s.hw, s.c_out,
                                     (t1 - t0) * s.c_in, A, B, C, beta, clips, g - f,
                                     "temporal_conv1d forward GEMM (NCHW)");
    if (st.cuda != cudaSuccess || st.cublas != 0) return st;
    f = g;
  }
  return ok();
}

TfaaStatus fwd_channels_last(cublasHandle_t h, int dtype, const void* x, const WeightView& w,
                             void* y, const TfaaConvShape& s, float beta_first) {
  const int64_t F = s.num_frames, K = s.taps, p = K / 2;
  const int64_t clips = s.batch_frames / F;
  const int64_t xf = s.c_in * s.hw, yf = s.c_out * s.hw;
  const cudaDataType t = cuda_type(dtype);
  const int64_t es = elem_size(dtype);
  for (int64_t i = 0; i < K; ++i) {
    const int64_t tap = i == 0 ? p : (i <= p ? i - 1 : i);  // centre tap first, then the rest
    int64_t fa, fb;
    tap_frames(s, tap, fa, fb);
    // A = W_t (C_out x C_in): OTR stores W_t^T column-major, TRO stores W_t column-major
    const Operand A{w.at(tap, s, es), w.ld(s), 0, 0};
    const Operand B{offset(x, (fa + tap - p) * xf, es), s.c_in, F * xf, xf};  // x frame
    const Operand C{offset(y, fa * yf, es), s.c_out, F * yf, yf};
    // the clip's frames [fa, fb) as one (C x nf*HW) matrix (folds_frames), else one item a frame
    const bool fold = folds_frames(s, fb - fa);
    const TfaaStatus st = gemm_items(h, t, es, t, es, w.tro ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N,
                                     s.c_out, fold ? (fb - fa) * s.hw : s.hw,
                                     s.c_in, A, B, C, i == 0 ? beta_first : 1.f, clips, fold ? 1 : fb - fa,
                                     "temporal_conv1d forward GEMM (channels_last)");
    if (st.cuda != cudaSuccess || st.cublas != 0) return st;
  }
  return ok();
}

// Put the handle on `stream` unless it is already there (PyTorch's handle is; setting it again
// would drop the workspace PyTorch gave it).
TfaaStatus bind_stream(cublasHandle_t h, cudaStream_t stream) {
  cudaStream_t cur = nullptr;
  cublasStatus_t st = cublasGetStream(h, &cur);
  if (st == CUBLAS_STATUS_SUCCESS && cur != stream) st = cublasSetStream(h, stream);
  if (st != CUBLAS_STATUS_SUCCESS) return TfaaStatus{cudaSuccess, static_cast<int>(st), "cublasSetStream"};
  return ok();
}

constexpr int64_t kDweightWorkspaceBudget = 16ll << 20;  // fp32 elements (64 MiB)

int64_t dweight_max_slots(const TfaaConvShape& s) {
  const int64_t per_slot = s.taps * s.c_out * s.c_in;
  const int64_t clips = s.batch_frames / s.num_frames;
  // longest item axis (clips when every tap folds its frames, see dweight_folds)
  const int64_t longest = clips > s.num_frames || dweight_folds(s, s.num_frames) ? clips : s.num_frames;
  int64_t slots = per_slot > 0 ? kDweightWorkspaceBudget / per_slot : 1;
  if (slots > longest) slots = longest;
  if (slots < 1) slots = 1;
  return slots;
}

// TFAA_CUDA_CONV_WGMMA=0 keeps every conv GEMM on cuBLAS (read at each call, so tests can flip it).
bool wgmma_enabled() {
  const char* env = std::getenv("TFAA_CUDA_CONV_WGMMA");
  return !(env != nullptr && env[0] == '0' && env[1] == '\0');
}

bool valid_shape(const TfaaConvShape& s) {
  return s.num_frames >= 1 && s.batch_frames % s.num_frames == 0 && s.taps >= 1 &&
         s.taps % 2 == 1 && s.c_in >= 0 && s.c_out >= 0 && s.hw >= 0;
}

}  // namespace
}  // namespace tfaa

using namespace tfaa;

TfaaStatus tfaa_temporal_conv1d_fwd(int dtype, const void* x, const void* wk, int weight_layout,
                                    const void* bias, void* y, TfaaConvShape s, void* cublas_handle,
                                    cudaStream_t stream) {
  if (!valid_shape(s)) return TfaaStatus{cudaErrorInvalidValue, 0, "temporal_conv1d shape"};
  if (weight_layout != TFAA_W_OTR && weight_layout != TFAA_W_TRO)
    return TfaaStatus{cudaErrorInvalidValue, 0, "temporal_conv1d weight layout"};
  if (s.batch_frames == 0 || s.c_out == 0 || s.hw == 0) return ok();
  if (weight_layout == TFAA_W_OTR && conv_wgmma_pointers_ok(x, wk, bias, y) &&
      tfaa_conv_fwd_uses_wgmma(dtype, s, stream)) {
    const cudaError_t e = conv_cl_wgmma_fwd(dtype, x, wk, bias, y, s, stream);
    return TfaaStatus{e, 0, e == cudaSuccess ? nullptr : "temporal_conv1d forward (wgmma kernel)"};
  }
  cublasHandle_t h = static_cast<cublasHandle_t>(cublas_handle);
  const TfaaStatus ss = bind_stream(h, stream);
  if (ss.cublas != 0) return ss;
  float beta = 0.f;
  if (bias != nullptr) {
    const cudaError_t e = conv_bias_fill(dtype, bias, y, s, stream);
    if (e != cudaSuccess) return TfaaStatus{e, 0, "temporal_conv1d bias fill"};
    beta = 1.f;
  }
  if (s.c_in == 0) {  // empty reduction: y = bias, or zeros (all-zero bits in every dtype)
    if (bias != nullptr) return ok();
    const cudaError_t e = cudaMemsetAsync(y, 0, s.batch_frames * s.c_out * s.hw * elem_size(dtype), stream);
    return TfaaStatus{e, 0, e == cudaSuccess ? nullptr : "temporal_conv1d zero fill"};
  }
  const WeightView w{wk, weight_layout == TFAA_W_TRO};
  return s.channels_last ? fwd_channels_last(h, dtype, x, w, y, s, beta)
                         : fwd_nchw(h, dtype, x, w, y, s, beta);
}

bool tfaa_conv_fwd_uses_wgmma(int dtype, TfaaConvShape s, cudaStream_t stream) {
  return valid_shape(s) && conv_wgmma_shape_ok(dtype, s) && wgmma_enabled() && conv_wgmma_device_ok(stream);
}

bool tfaa_conv_dweight_uses_wgmma(int dtype, TfaaConvShape s, cudaStream_t stream) {
  return valid_shape(s) && conv_wgmma_dweight_shape_ok(dtype, s) && wgmma_enabled() &&
         conv_wgmma_device_ok(stream);
}

int64_t tfaa_conv_dweight_workspace_floats(TfaaConvShape s) {
  return s.taps * dweight_max_slots(s) * s.c_out * s.c_in;
}

TfaaStatus tfaa_temporal_conv1d_dweight(int dtype, const void* dy, const void* x, void* dweight,
                                        float* workspace, TfaaConvShape s, void* cublas_handle,
                                        cudaStream_t stream) {
  if (!valid_shape(s)) return TfaaStatus{cudaErrorInvalidValue, 0, "temporal_conv1d shape"};
  if (s.c_out == 0 || s.c_in == 0) return ok();
  cublasHandle_t h = static_cast<cublasHandle_t>(cublas_handle);
  const TfaaStatus ss = bind_stream(h, stream);
  if (ss.cublas != 0) return ss;
  const int64_t F = s.num_frames, K = s.taps, p = K / 2;
  const int64_t clips = s.batch_frames / F;
  const int64_t xf = s.c_in * s.hw, yf = s.c_out * s.hw, cc = s.c_out * s.c_in;
  const int64_t max_slots = dweight_max_slots(s);
  const cudaDataType t = cuda_type(dtype);
  const int64_t es = elem_size(dtype);
  // dW_t as column-major (C_in x C_out), ld C_in == row-major (C_out, C_in).
  const cublasOperation_t ta = s.channels_last ? CUBLAS_OP_N : CUBLAS_OP_T;
  const cublasOperation_t tb = s.channels_last ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int64_t lda = s.channels_last ? s.c_in : s.hw;
  const int64_t ldb = s.channels_last ? s.c_out : s.hw;
  if (s.hw == 0 || s.batch_frames == 0) {  // empty reduction: dweight = 0
    const cudaError_t e = cudaMemsetAsync(dweight, 0, s.taps * cc * es, stream);
    return TfaaStatus{e, 0, e == cudaSuccess ? nullptr : "temporal_conv1d zero dweight"};
  }
  if (conv_wgmma_pointers_ok(dy, x, nullptr, dy) && tfaa_conv_dweight_uses_wgmma(dtype, s, stream)) {
    const int64_t splits = conv_wgmma_dweight_splits(s, max_slots);
    cudaError_t e = conv_nchw_wgmma_dweight(dtype, dy, x, workspace, max_slots, splits, s, stream);
    if (e == cudaSuccess) e = conv_dweight_reduce(dtype, workspace, dweight, max_slots, s, stream, splits);
    return TfaaStatus{e, 0, e == cudaSuccess ? nullptr : "temporal_conv1d weight gradient (wgmma kernel)"};
  }
  {
    for (int64_t tap = 0; tap < K; ++tap) {
      int64_t fa, fb;
      tap_frames(s, tap, fa, fb);
      const int64_t nf = fb - fa;
      if (nf <= 0) continue;
      // channels_last with enough output tiles (dweight_folds): a clip's frames [fa, fb) are one
      // (C x nf*HW) matrix, one GEMM with the reduction over nf*HW; items = clips. Else batch the
      // longer item axis (frames of a clip, or clips) into the slots and loop the other.
      const bool fold = dweight_folds(s, nf);
      const bool by_clip = fold || clips > nf;
      const int64_t axis = by_clip ? clips : nf;
      const int64_t other = fold ? 1 : (by_clip ? nf : clips);
      const int64_t k = fold ? nf * s.hw : s.hw;
      const int64_t slots = axis < max_slots ? axis : max_slots;
      float* ws_t = workspace + tap * max_slots * cc;
      for (int64_t o = 0; o < other; ++o) {
        for (int64_t c0 = 0; c0 < axis; c0 += slots) {
          const int64_t count = axis - c0 < slots ? axis - c0 : slots;
          // first item (clip b0, output frame f0) of this batch and the item strides
          const int64_t b0 = by_clip ? c0 : o;
          const int64_t f0 = by_clip ? fa + o : fa + c0;
          const int64_t frames_step = by_clip ? F : 1;
          const Operand A{offset(x, (b0 * F + f0 + tap - p) * xf, es), lda, 0, frames_step * xf};
          const Operand B{offset(dy, (b0 * F + f0) * yf, es), ldb, 0, frames_step * yf};
          const Operand C{ws_t, s.c_in, 0, cc};
          const float beta = (o == 0 && c0 == 0) ? 0.f : 1.f;
          const TfaaStatus st = gemm_items(h, t, es, CUDA_R_32F, 4, ta, tb, s.c_in, s.c_out, k,
                                           A, B, C, beta, 1, count,
                                           "temporal_conv1d weight-gradient GEMM");
          if (st.cuda != cudaSuccess || st.cublas != 0) return st;
        }
      }
    }
  }
  const cudaError_t e = conv_dweight_reduce(dtype, workspace, dweight, max_slots, s, stream);
  if (e != cudaSuccess) return TfaaStatus{e, 0, "temporal_conv1d weight-gradient reduction"};
  return ok();
}

void* tfaa_own_cublas_handle() {
  constexpr int kMaxDevices = 64;
  static cublasHandle_t handles[kMaxDevices] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return nullptr;
  if (handles[dev] == nullptr) {
    cublasHandle_t h = nullptr;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return nullptr;
    handles[dev] = h;
  }
  return handles[dev];
}
