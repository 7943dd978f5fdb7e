// PyTorch glue of the tfaa CUDA kernels: argument checks, current stream, dtype codes, and the
// TORCH_LIBRARY registration of four ops in the `tfaa_cuda` namespace. Outputs are passed in
// preallocated (the Python glue in tfaa_kernels/cuda/ops.py allocates them through
// tfaa_kernels._alloc, so tests can poison them):
//
//   temporal_attention_fwd(q, k, v, num_frames, scale, out!)
//   temporal_attention_bwd(dout, q, k, v, num_frames, scale, dq!, dk!, dv!)
//   temporal_conv1d_fwd(x, weight, bias?, num_frames, y!)
//   temporal_conv1d_bwd(dy, x, weight, num_frames, dx!, dweight!, dbias!?)
//
// Layouts (DESIGN.md §1): q, k, v, dout (B*F, L, H, D) with stride(-1) == 1; out, dq, dk, dv
// (B*F, L, H, D) contiguous. x, y, dy, dx (B*F, C, H, W), all NCHW-contiguous or all
// channels_last (x decides); weight / dweight (C_out, C_in, K); bias / dbias (C_out,).
#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <optional>
#include <map>
#include <string>

// PyTorch's cuBLAS handle (its workspace, stream and math mode) when the headers that
// ATen/cuda/CUDAContext.h pulls in exist; otherwise a handle of our own (tfaa_own_cublas_handle).
#if __has_include(<cublas_v2.h>) && __has_include(<cublasLt.h>) && __has_include(<cusparse.h>) && \
    __has_include(<cusolverDn.h>)
#include <ATen/cuda/CUDAContext.h>
#define TFAA_TORCH_CUBLAS_HANDLE 1
#endif

#include "tfaa_kernels.h"

namespace {

int dtype_code(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return TFAA_F32;
    case at::kHalf: return TFAA_F16;
    case at::kBFloat16: return TFAA_BF16;
    default:
      TORCH_CHECK(false, "tfaa_cuda: ", name, " must be float32, float16 or bfloat16, got ",
                  t.scalar_type());
  }
  return -1;
}

void check_cuda(cudaError_t e, const char* what) {
  TORCH_CHECK(e == cudaSuccess, "tfaa_cuda: ", what, " failed: ", cudaGetErrorName(e), " (",
              cudaGetErrorString(e), ")");
}

void check_status(const TfaaStatus& s, const char* what) {
  TORCH_CHECK(s.cuda == cudaSuccess, "tfaa_cuda: ", what, ": ", s.where ? s.where : "?",
              " failed: ", cudaGetErrorName(s.cuda), " (", cudaGetErrorString(s.cuda), ")");
  TORCH_CHECK(s.cublas == 0, "tfaa_cuda: ", what, ": ", s.where ? s.where : "?",
              " failed with cublasStatus_t ", s.cublas);
}

void* blas_handle() {
#ifdef TFAA_TORCH_CUBLAS_HANDLE
  return static_cast<void*>(at::cuda::getCurrentCUDABlasHandle());
#else
  void* h = tfaa_own_cublas_handle();
  TORCH_CHECK(h != nullptr, "tfaa_cuda: could not create a cuBLAS handle");
  return h;
#endif
}

// t is a CUDA tensor on ref's device with ref's dtype.
void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.is_cuda(), "tfaa_cuda: ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.device() == ref.device(), "tfaa_cuda: ", name, " must be on ", ref_name,
              "'s device ", ref.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "tfaa_cuda: ", name, " must have ", ref_name,
              "'s dtype ", ref.scalar_type(), ", got ", t.scalar_type());
}

// ------------------------------------------------------------------ attention
void check_attn_input(const at::Tensor& t, const char* name, const at::Tensor& q) {
  check_like(t, name, q, "q");
  TORCH_CHECK(t.dim() == 4, "tfaa_cuda: ", name, " must be 4-D (B*F, L, H, D), got shape ",
              t.sizes());
  TORCH_CHECK(t.sizes() == q.sizes(), "tfaa_cuda: ", name, " must have q's shape ", q.sizes(),
              ", got ", t.sizes());
  TORCH_CHECK(t.size(3) <= 1 || t.stride(3) == 1, "tfaa_cuda: ", name,
              " must have stride(-1) == 1 (contiguous head dim), got strides ", t.strides());
}

void check_attn_output(const at::Tensor& t, const char* name, const at::Tensor& q) {
  check_like(t, name, q, "q");
  TORCH_CHECK(t.sizes() == q.sizes(), "tfaa_cuda: ", name, " must have q's shape ", q.sizes(),
              ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "tfaa_cuda: ", name, " must be contiguous");
}

void check_attn_args(const at::Tensor& q, int64_t num_frames, double scale) {
  TORCH_CHECK(q.dim() == 4, "tfaa_cuda: q must be 4-D (B*F, L, H, D), got shape ", q.sizes());
  TORCH_CHECK(num_frames >= 1 && num_frames <= INT32_MAX, "tfaa_cuda: num_frames must be in [1, 2^31), got ", num_frames);
  TORCH_CHECK(q.size(0) % num_frames == 0, "tfaa_cuda: q.shape[0] (B*F = ", q.size(0),
              ") must be divisible by num_frames = ", num_frames);
  TORCH_CHECK(q.size(3) >= 1 && q.size(3) <= TFAA_ATTN_MAX_D, "tfaa_cuda: the head dim D must be in [1, ",
              TFAA_ATTN_MAX_D, "], got ", q.size(3));
  TORCH_CHECK(std::isfinite(scale) && scale > 0, "tfaa_cuda: scale must be finite and > 0, got ", scale);
}

TfaaAttnStrides strides3(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

void temporal_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t num_frames, double scale, const at::Tensor& out) {
  TORCH_CHECK(q.is_cuda(), "tfaa_cuda: q must be a CUDA tensor, got device ", q.device());
  check_attn_args(q, num_frames, scale);
  check_attn_input(q, "q", q);
  check_attn_input(k, "k", q);
  check_attn_input(v, "v", q);
  check_attn_output(out, "out", q);
  const int dt = dtype_code(q, "q");
  if (q.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.get_device()).stream();
  check_cuda(tfaa_temporal_attention_fwd(dt, q.data_ptr(), strides3(q), k.data_ptr(), strides3(k),
                                         v.data_ptr(), strides3(v), out.data_ptr(), q.size(0),
                                         num_frames, q.size(1), q.size(2), q.size(3),
                                         static_cast<float>(scale), stream),
             "temporal_attention_fwd kernel launch");
}

void temporal_attention_bwd(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, int64_t num_frames, double scale,
                            const at::Tensor& dq, const at::Tensor& dk, const at::Tensor& dv) {
  TORCH_CHECK(q.is_cuda(), "tfaa_cuda: q must be a CUDA tensor, got device ", q.device());
  check_attn_args(q, num_frames, scale);
  check_attn_input(dout, "dout", q);
  check_attn_input(q, "q", q);
  check_attn_input(k, "k", q);
  check_attn_input(v, "v", q);
  check_attn_output(dq, "dq", q);
  check_attn_output(dk, "dk", q);
  check_attn_output(dv, "dv", q);
  const int dt = dtype_code(q, "q");
  if (q.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.get_device()).stream();
  check_cuda(tfaa_temporal_attention_bwd(dt, dout.data_ptr(), strides3(dout), q.data_ptr(),
                                         strides3(q), k.data_ptr(), strides3(k), v.data_ptr(),
                                         strides3(v), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                                         q.size(0), num_frames, q.size(1), q.size(2), q.size(3),
                                         static_cast<float>(scale), stream),
             "temporal_attention_bwd kernel launch");
}

// ------------------------------------------------------------------ temporal conv1d
// The memory format every activation of a conv call must have: x's.
at::MemoryFormat conv_format(const at::Tensor& x) {
  if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "tfaa_cuda: x must be contiguous (NCHW) or channels_last, got strides ", x.strides());
  return at::MemoryFormat::ChannelsLast;
}

void check_activation(const at::Tensor& t, const char* name, const at::Tensor& x, int64_t channels,
                      at::MemoryFormat fmt) {
  check_like(t, name, x, "x");
  TORCH_CHECK(t.dim() == 4 && t.size(0) == x.size(0) && t.size(1) == channels &&
                  t.size(2) == x.size(2) && t.size(3) == x.size(3),
              "tfaa_cuda: ", name, " must have shape (", x.size(0), ", ", channels, ", ", x.size(2),
              ", ", x.size(3), "), got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(fmt), "tfaa_cuda: ", name, " must be in x's memory format (",
              fmt == at::MemoryFormat::ChannelsLast ? "channels_last" : "contiguous NCHW",
              "), got strides ", t.strides());
}

TfaaConvShape conv_shape(const at::Tensor& x, const at::Tensor& weight, int64_t num_frames,
                         at::MemoryFormat fmt) {
  TORCH_CHECK(x.dim() == 4, "tfaa_cuda: x must be 4-D (B*F, C_in, H, W), got shape ", x.sizes());
  check_like(weight, "weight", x, "x");
  TORCH_CHECK(weight.dim() == 3, "tfaa_cuda: weight must be 3-D (C_out, C_in, K), got shape ",
              weight.sizes());
  TORCH_CHECK(weight.size(1) == x.size(1), "tfaa_cuda: weight.shape[1] must be C_in = x.shape[1] = ",
              x.size(1), ", got weight shape ", weight.sizes());
  TORCH_CHECK(weight.size(2) % 2 == 1, "tfaa_cuda: weight's kernel size K = weight.shape[2] must be odd, got ",
              weight.size(2));
  TORCH_CHECK(num_frames >= 1, "tfaa_cuda: num_frames must be >= 1, got ", num_frames);
  TORCH_CHECK(x.size(0) % num_frames == 0, "tfaa_cuda: x.shape[0] (B*F = ", x.size(0),
              ") must be divisible by num_frames = ", num_frames);
  TfaaConvShape s;
  s.batch_frames = x.size(0);
  s.num_frames = num_frames;
  s.c_in = weight.size(1);
  s.c_out = weight.size(0);
  s.hw = x.size(2) * x.size(3);
  s.taps = weight.size(2);
  s.channels_last = fmt == at::MemoryFormat::ChannelsLast;
  return s;
}

// The input gradient's conv (a forward of dy with the transposed, flipped weight): C_in <-> C_out.
TfaaConvShape input_grad_shape(const TfaaConvShape& s) {
  TfaaConvShape st = s;
  st.c_in = s.c_out;
  st.c_out = s.c_in;
  return st;
}

// The tap-major copy of weight (C_out, C_in, K) that a conv GEMM of `layout` reads (tfaa_kernels.h).
at::Tensor weight_copy(const at::Tensor& weight, int layout, int dt, cudaStream_t stream) {
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty({w.numel()}, w.options());
  check_cuda(tfaa_conv_weight_relayout(dt, w.data_ptr(), out.data_ptr(), w.size(0), w.size(1),
                                       w.size(2), layout, stream),
             "temporal_conv1d weight relayout");
  return out;
}

void temporal_conv1d_fwd(const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, int64_t num_frames,
                         const at::Tensor& y) {
  TORCH_CHECK(x.is_cuda(), "tfaa_cuda: x must be a CUDA tensor, got device ", x.device());
  const at::MemoryFormat fmt = conv_format(x);
  const TfaaConvShape s = conv_shape(x, weight, num_frames, fmt);
  check_activation(y, "y", x, s.c_out, fmt);
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    check_like(*bias, "bias", x, "x");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.c_out, "tfaa_cuda: bias must have shape (",
                s.c_out, ",), got ", bias->sizes());
    b = bias->contiguous();
  }
  const int dt = dtype_code(x, "x");
  if (y.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();
  const at::Tensor wk = weight_copy(weight, TFAA_W_OTR, dt, stream);  // (C_out, K, C_in), tiny
  check_status(tfaa_temporal_conv1d_fwd(dt, x.data_ptr(), wk.data_ptr(), TFAA_W_OTR,
                                        b.defined() ? b.data_ptr() : nullptr, y.data_ptr(), s,
                                        blas_handle(), stream),
               "temporal_conv1d_fwd");
}

void temporal_conv1d_bwd(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                         int64_t num_frames, const at::Tensor& dx, const at::Tensor& dweight,
                         const std::optional<at::Tensor>& dbias) {
  TORCH_CHECK(x.is_cuda(), "tfaa_cuda: x must be a CUDA tensor, got device ", x.device());
  const at::MemoryFormat fmt = conv_format(x);
  const TfaaConvShape s = conv_shape(x, weight, num_frames, fmt);
  check_activation(dy, "dy", x, s.c_out, fmt);
  check_activation(dx, "dx", x, s.c_in, fmt);
  check_like(dweight, "dweight", x, "x");
  TORCH_CHECK(dweight.sizes() == weight.sizes() && dweight.is_contiguous(),
              "tfaa_cuda: dweight must be contiguous with weight's shape ", weight.sizes(),
              ", got shape ", dweight.sizes(), " strides ", dweight.strides());
  const bool want_db = dbias.has_value() && dbias->defined();
  if (want_db) {
    check_like(*dbias, "dbias", x, "x");
    TORCH_CHECK(dbias->dim() == 1 && dbias->size(0) == s.c_out && dbias->is_contiguous(),
                "tfaa_cuda: dbias must be contiguous with shape (", s.c_out, ",), got ", dbias->sizes());
  }
  const int dt = dtype_code(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();

  // dx: the same conv run on dy with W'_s[ci, co] = W[co, ci, K-1-s]: read as TRO (K, C_out, C_in)
  // by the cuBLAS GEMMs, or as OTR (C_in, K, C_out) by the Hopper kernel.
  if (dx.numel() > 0) {
    const TfaaConvShape st = input_grad_shape(s);
    const bool otr = tfaa_conv_fwd_uses_wgmma(dt, st, stream);
    const at::Tensor wk = weight_copy(weight, otr ? TFAA_W_OTR_DGRAD : TFAA_W_TRO, dt, stream);
    check_status(tfaa_temporal_conv1d_fwd(dt, dy.data_ptr(), wk.data_ptr(), otr ? TFAA_W_OTR : TFAA_W_TRO,
                                          nullptr, dx.data_ptr(), st, blas_handle(), stream),
                 "temporal_conv1d_bwd (input gradient)");
  }
  if (dweight.numel() > 0) {
    const at::Tensor ws = at::empty({tfaa_conv_dweight_workspace_floats(s)},
                                    x.options().dtype(at::kFloat));
    check_status(tfaa_temporal_conv1d_dweight(dt, dy.data_ptr(), x.data_ptr(), dweight.data_ptr(),
                                              ws.data_ptr<float>(), s, blas_handle(), stream),
                 "temporal_conv1d_bwd (weight gradient)");
  }
  if (want_db && dbias->numel() > 0) {
    const at::Tensor ws = at::empty({tfaa_conv_dbias_workspace_floats(s)},
                                    x.options().dtype(at::kFloat));
    check_cuda(tfaa_temporal_conv1d_dbias(dt, dy.data_ptr(), dbias->data_ptr(),
                                          ws.data_ptr<float>(), s, stream),
               "temporal_conv1d_bwd (bias gradient)");
  }
}

// Which implementation each GEMM of a conv call on x (aligned as given) and weight runs: "wgmma"
// (the Hopper TMA + wgmma kernels) or "cublas", for the forward, the input gradient and the weight
// gradient (dy assumed laid out and aligned like x). For tests and benchmarks.
std::map<std::string, std::string> conv_paths(const at::Tensor& x, const at::Tensor& weight,
                                              int64_t num_frames) {
  TORCH_CHECK(x.is_cuda(), "tfaa_cuda: x must be a CUDA tensor, got device ", x.device());
  const TfaaConvShape s = conv_shape(x, weight, num_frames, conv_format(x));
  const TfaaConvShape st = input_grad_shape(s);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();
  const bool aligned = (reinterpret_cast<uintptr_t>(x.data_ptr()) & 15) == 0;
  const int dt = dtype_code(x, "x");
  auto name = [&](bool wgmma) { return std::string(aligned && wgmma ? "wgmma" : "cublas"); };
  return {{"forward", name(tfaa_conv_fwd_uses_wgmma(dt, s, stream))},
          {"input_grad", name(tfaa_conv_fwd_uses_wgmma(dt, st, stream))},
          {"weight_grad", name(tfaa_conv_dweight_uses_wgmma(dt, s, stream))}};
}

}  // namespace

TORCH_LIBRARY(tfaa_cuda, m) {
  m.def("temporal_attention_fwd(Tensor q, Tensor k, Tensor v, int num_frames, float scale, "
        "Tensor(a!) out) -> ()");
  m.def("temporal_attention_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, int num_frames, "
        "float scale, Tensor(a!) dq, Tensor(b!) dk, Tensor(c!) dv) -> ()");
  m.def("temporal_conv1d_fwd(Tensor x, Tensor weight, Tensor? bias, int num_frames, "
        "Tensor(a!) y) -> ()");
  m.def("temporal_conv1d_bwd(Tensor dy, Tensor x, Tensor weight, int num_frames, Tensor(a!) dx, "
        "Tensor(b!) dweight, Tensor(c!)? dbias) -> ()");
}

TORCH_LIBRARY_IMPL(tfaa_cuda, CUDA, m) {
  m.impl("temporal_attention_fwd", &temporal_attention_fwd);
  m.impl("temporal_attention_bwd", &temporal_attention_bwd);
  m.impl("temporal_conv1d_fwd", &temporal_conv1d_fwd);
  m.impl("temporal_conv1d_bwd", &temporal_conv1d_bwd);
}


// A Python module too, so the extension imports as tfaa_kernels._C (setup.py) or by name (JIT).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tfaa CUDA kernels; the ops live in torch.ops.tfaa_cuda";
  m.def("conv_paths", &conv_paths, "{'forward', 'input_grad', 'weight_grad'} -> 'wgmma' or 'cublas': "
        "the temporal conv's implementation for these tensors", pybind11::arg("x"), pybind11::arg("weight"),
        pybind11::arg("num_frames"));
#ifdef TFAA_TORCH_CUBLAS_HANDLE
  m.attr("uses_torch_cublas_handle") = true;
#else
  m.attr("uses_torch_cublas_handle") = false;
#endif
}
