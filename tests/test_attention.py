"""first_adjacent_attention: kernel backends against the reference, custom-op registration,
torch.compile, and errors for bad input. CPU runs the Triton kernels in the interpreter (fp32, tiny
shapes); tests marked gpu run every kernel backend on CUDA in fp32/bf16/fp16."""
import pytest
import torch

import tfaa_kernels as tk
from tfaa_kernels import reference
from tfaa_kernels.backends import available_backends
from helpers import TOL, TOL_TF32, assert_close, leaf_qkv, packed_qkv

CPU_KERNELS = [b for b in ("triton",) if b in available_backends("cpu")]
GPU_KERNELS = [b for b in ("triton", "cuda") if torch.cuda.is_available() and b in available_backends("cuda")]
MODES = ["temporal", "spatial"]


def implemented(backend, mode):
    from tfaa_kernels.backends import has_impl
    return has_impl(f"{mode}_attention", backend)


def check_against_reference(q, k, v, qkv_leaf, num_frames, mode, backend, tol, scale=None):
    """Forward and backward of ``backend`` against the float64 reference on the same inputs."""
    leaves = [qkv_leaf] if qkv_leaf is not None else [q, k, v]
    out = tk.first_adjacent_attention(q, k, v, num_frames, mode, scale=scale, backend=backend)
    assert out.dtype == q.dtype and out.is_contiguous()
    d64 = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    ref = reference.first_adjacent_attention(*d64, num_frames, mode, scale=scale)
    assert_close(out, ref, tol, f"{mode}/{backend} forward")
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, dout)
    ref_grads = torch.autograd.grad(ref, d64, dout.double())
    if qkv_leaf is not None:  # gradients of the packed projection, sliced back into q/k/v parts
        h, d = q.shape[-2:]
        g = grads[0]
        assert_close(g[..., 3 * h * d:], torch.zeros_like(g[..., 3 * h * d:]), 1e-30, "pad grad")
        grads = [g[..., i * h * d:(i + 1) * h * d].unflatten(-1, (h, d)) for i in range(3)]
    for name, g, r in zip("qkv", grads, ref_grads):
        assert_close(g, r, tol, f"{mode}/{backend} d{name}")


# ----------------------------------------------------------------- CPU (Triton interpreter)
@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_frames", [1, 2, 3, 5])
def test_kernel_cpu_packed_views(backend, mode, num_frames, poison):
    if not implemented(backend, mode):
        pytest.skip(f"{backend} has no {mode} kernel")
    q, k, v, qkv = packed_qkv(2 * num_frames, 7, 2, 16)
    check_against_reference(q, k, v, qkv, num_frames, mode, backend, 1e-5)


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(3, 5, 3, 8), (2, 9, 1, 40), (1, 3, 2, 24)])
def test_kernel_cpu_shapes(backend, mode, shape, poison):
    if not implemented(backend, mode):
        pytest.skip(f"{backend} has no {mode} kernel")
    num_frames, l, h, d = shape
    q, k, v = leaf_qkv(num_frames, l, h, d)
    check_against_reference(q, k, v, None, num_frames, mode, backend, 1e-5, scale=0.3)


@pytest.mark.parametrize("target_programs", [1, 1 << 20])
def test_triton_temporal_backward_paths(target_programs, monkeypatch, poison):
    """Both backward paths: one program per clip walking all frames (frame-0 gradient written
    directly), and frames split into chunks (frame-0 gradient reduced from fp32 partials)."""
    if "triton" not in CPU_KERNELS + GPU_KERNELS:
        pytest.skip("no triton")
    from tfaa_kernels.triton import temporal_attention
    monkeypatch.setattr(temporal_attention, "_TARGET_PROGRAMS", target_programs)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v, qkv = packed_qkv(2 * 5, 6, 2, 8, device=dev)
    check_against_reference(q, k, v, qkv, 5, "temporal", "triton", 1e-5)


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_kernel_cpu_transposed_views(backend, poison):
    """Views with permuted (token/head) strides, as from a (B*F, H, L, D) projection."""
    base = [torch.randn(6, 2, 5, 8, requires_grad=True) for _ in range(3)]
    q, k, v = (t.transpose(1, 2) for t in base)
    out = tk.first_adjacent_attention(q, k, v, 3, backend=backend)
    ref = reference.first_adjacent_attention(q.double(), k.double(), v.double(), 3)
    assert_close(out, ref, 1e-5)


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_opcheck_cpu(backend):
    q, k, v = leaf_qkv(6, 5, 2, 8)
    torch.library.opcheck(torch.ops.tfaa.temporal_attention_fwd.default, (q, k, v, 3, 0.35, backend))
    dout = torch.randn(6, 5, 2, 8)
    torch.library.opcheck(torch.ops.tfaa.temporal_attention_bwd.default,
                          (dout, q.detach(), k.detach(), v.detach(), 3, 0.35, backend))


class _TinyTFAA(torch.nn.Module):
    def __init__(self, c=16, heads=2, backend="auto", mode="temporal"):
        super().__init__()
        self.qkv = torch.nn.Linear(c, 3 * c, bias=False)
        self.heads, self.backend, self.mode = heads, backend, mode

    def forward(self, x, num_frames: int):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).unbind(2)
        out = tk.first_adjacent_attention(q, k, v, num_frames, self.mode, backend=self.backend)
        return out.flatten(-2)


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_compile_fullgraph_cpu(backend):
    torch._dynamo.reset()
    m = _TinyTFAA(backend=backend)
    x = torch.randn(6, 5, 16, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    y = compiled(x, 3)
    y.sum().backward()
    g_c = x.grad.clone()
    x.grad = None
    y_e = m(x, 3)
    y_e.sum().backward()
    assert_close(y, y_e, 1e-6)
    assert_close(g_c, x.grad, 1e-6)


# ----------------------------------------------------------------- errors and edge cases
def test_available_backends_cpu():
    assert available_backends("cpu")[0] == "torch"
    assert set(available_backends("cpu")) <= {"torch", "triton"}


def test_auto_is_reference_on_cpu():
    q, k, v = leaf_qkv(4, 3, 2, 8)
    a = tk.first_adjacent_attention(q, k, v, 2)
    b = reference.first_adjacent_attention(q, k, v, 2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["torch"] + CPU_KERNELS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(0, 5, 2, 8), (4, 0, 2, 8)])
def test_empty_inputs(backend, mode, shape):
    if not implemented(backend, mode):
        pytest.skip(f"{backend} has no {mode} kernel")
    q, k, v = leaf_qkv(*shape)
    out = tk.first_adjacent_attention(q, k, v, 2, mode, backend=backend)
    assert out.shape == shape
    out.sum().backward()
    assert q.grad.shape == shape


def _qkv(shape=(4, 3, 2, 8), **kw):
    return [torch.randn(*shape, **kw) for _ in range(3)]


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(num_frames=3), ValueError, "divisible by num_frames"),
    (dict(num_frames=0), ValueError, "num_frames must be >= 1"),
    (dict(num_frames=2.0), TypeError, "num_frames must be an int"),
    (dict(mode="full"), ValueError, "mode must be"),
    (dict(backend="cudnn"), ValueError, "backend must be one of"),
    (dict(scale=-1.0), ValueError, "scale must be"),
    (dict(scale="x"), TypeError, "scale must be"),
])
def test_bad_arguments(kwargs, exc, msg):
    q, k, v = _qkv()
    args = dict(num_frames=2)
    args.update(kwargs)
    with pytest.raises(exc, match=msg):
        tk.first_adjacent_attention(q, k, v, **args)


def test_bad_tensors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="same shape"):
        tk.first_adjacent_attention(q, k[:, :2], v, 2)
    with pytest.raises(ValueError, match=r"q must have 4 dims"):
        tk.first_adjacent_attention(q[0], k, v, 2)
    with pytest.raises(TypeError, match="k must be a torch.Tensor"):
        tk.first_adjacent_attention(q, k.numpy(), v, 2)
    with pytest.raises(TypeError, match="same dtype"):
        tk.first_adjacent_attention(q, k.double(), v, 2)
    with pytest.raises(ValueError, match=r"stride\(-1\) == 1"):
        kt = torch.randn(4, 3, 8, 2).transpose(-1, -2)
        tk.first_adjacent_attention(q, kt, v, 2)
    with pytest.raises(ValueError, match="head dim D >= 1"):
        tk.first_adjacent_attention(*_qkv((4, 3, 2, 0)), 2)
    with pytest.raises(TypeError, match="dtype"):
        tk.first_adjacent_attention(*[t.to(torch.int32) for t in (q, k, v)], 2)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="same device"):
            tk.first_adjacent_attention(q, k.cuda(), v, 2)


@pytest.mark.parametrize("mode", MODES)
def test_kernel_backend_rejects_fp64(mode):
    backends = CPU_KERNELS if not torch.cuda.is_available() else GPU_KERNELS
    for b in backends:
        dev = "cpu" if not torch.cuda.is_available() else "cuda"
        if implemented(b, mode):
            with pytest.raises(TypeError, match="float64"):
                tk.first_adjacent_attention(*_qkv(dtype=torch.float64, device=dev), 2, mode, backend=b)


def test_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        tk.first_adjacent_attention(*_qkv(), 2, backend="triton")


# ----------------------------------------------------------------- GPU
GPU_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("num_frames,l,h,d", [(1, 77, 3, 64), (2, 129, 2, 40), (3, 64, 8, 40),
                                               (5, 257, 4, 80), (16, 100, 2, 160), (3, 33, 1, 256),
                                               (4, 50, 5, 8)])
def test_kernel_gpu(backend, mode, dtype, num_frames, l, h, d, poison):
    if not implemented(backend, mode):
        pytest.skip(f"{backend} has no {mode} kernel")
    if mode == "spatial" and not 32 <= d <= 160:
        pytest.skip("spatial kernels cover head dims 32..160")
    torch.backends.cuda.matmul.allow_tf32 = False
    q, k, v, qkv = packed_qkv(2 * num_frames, l, h, d, dtype=dtype, device="cuda")
    tol = TOL[dtype] if not (mode == "spatial" and dtype == torch.float32) else TOL_TF32
    check_against_reference(q, k, v, qkv, num_frames, mode, backend, tol)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
def test_int64_offsets_gpu(backend):
    """More than 2^31 elements in one tensor: offsets must be computed in int64."""
    l, h, d, f = 2 ** 16, 4, 64, 2
    n = (2 ** 31) // (l * h * d) + 2          # > 2^31 elements
    n += n % f
    q = torch.randn(n, l, h, d, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    out = tk.first_adjacent_attention(q, k, v, f, backend=backend)
    for row in (0, n - 1):  # rows past the 2^31 boundary against the reference on the same clip
        c = row - row % f
        ref = reference.first_adjacent_attention(q[c:c + f].double(), k[c:c + f].double(),
                                                 v[c:c + f].double(), f)
        assert_close(out[c:c + f], ref, 2e-2, f"rows {c}..{c + f}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_gpu(backend, mode):
    if not implemented(backend, mode):
        pytest.skip(f"{backend} has no {mode} kernel")
    q, k, v = leaf_qkv(6, 37, 2, 64, dtype=torch.bfloat16, device="cuda")
    op = getattr(torch.ops.tfaa, f"{mode}_attention_fwd").default
    torch.library.opcheck(op, (q, k, v, 3, 0.125, backend))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
@pytest.mark.parametrize("mode", MODES)
def test_compile_fullgraph_gpu(backend, mode):
    if not implemented(backend, mode):
        pytest.skip(f"{backend} has no {mode} kernel")
    torch._dynamo.reset()
    m = _TinyTFAA(c=128, heads=2, backend=backend, mode=mode).cuda().to(torch.bfloat16)
    x = torch.randn(8, 64, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True)
    y = compiled(x, 4)
    y.float().square().sum().backward()
    g = x.grad.clone()
    x.grad = None
    y_e = m(x, 4)
    y_e.float().square().sum().backward()
    assert_close(y, y_e, 2e-2)
    assert_close(g, x.grad, 2e-2)


def test_autocast_casts_inputs():
    q, k, v = (torch.randn(4, 3, 2, 8) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tk.first_adjacent_attention(q, k.bfloat16(), v, 2, backend="torch")
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("d,requires_grad,grad_mode,expected", [
    (40, True, True, "ref"),        # training at D < 64: the reference (faster fwd+bwd at S1)
    (40, True, False, "kernel"),    # inference: the kernel (faster forward)
    (40, False, True, "kernel"),
    (80, True, True, "kernel"),     # D >= 64: the kernel, forward and backward
])
def test_auto_spatial_backend_choice(d, requires_grad, grad_mode, expected, monkeypatch):
    """backend="auto", mode="spatial": the reference only where a backward follows and the head
    dim is below 64 (measured: the kernels' forward is faster everywhere, their forward+backward
    slower at D = 40)."""
    from tfaa_kernels.ops import attention as attn_op
    calls = []
    monkeypatch.setattr(attn_op, "resolve_backend", lambda b, op, dev: "triton")
    monkeypatch.setattr(attn_op.reference, "first_adjacent_attention",
                        lambda *a, **k: calls.append("ref") or torch.zeros(4, 3, 2, d))
    monkeypatch.setattr(attn_op, "spatial_attention_fwd",
                        lambda *a, **k: calls.append("kernel") or (torch.zeros(4, 3, 2, d), None))
    with torch.set_grad_enabled(grad_mode):
        tk.first_adjacent_attention(*_qkv((4, 3, 2, d), requires_grad=requires_grad), 2, "spatial")
    assert calls == [expected]
