"""group_norm_silu (GroupNorm -> SiLU for inference): the Triton statistics + apply kernels against
torch's GroupNorm + SiLU in float64, on every layout path (flat NCHW, channels_last tiles, strided
views; statistics in one or several chunks), the auto policy, the custom op's registration and
autograd, errors for bad input, and the temporal conv's composite path that calls it. CPU runs the
Triton kernels in the interpreter (fp32, tiny shapes); tests marked gpu run them on CUDA."""
import pytest
import torch
import torch.nn.functional as F

import tfaa_kernels as tk
from tfaa_kernels import GroupNormSpec, reference
from tfaa_kernels.backends import available_backends
from tfaa_kernels.ops import group_norm as gn_op
from helpers import TOL, assert_close

TRITON_CPU = "triton" in available_backends("cpu")
needs_interp = pytest.mark.skipif(not TRITON_CPU, reason="needs the Triton interpreter (TRITON_INTERPRET=1)")
CL = torch.channels_last


def expected_format(x):
    if x.is_contiguous(memory_format=CL) and not x.is_contiguous():
        return CL
    return torch.contiguous_format


def make_x(n, c, h, w, layout="nchw", dtype=torch.float32, device="cpu"):
    """x of shape (n, c, h, w) in one of the layouts the kernels distinguish."""
    if layout == "nchw":
        return torch.randn(n, c, h, w, dtype=dtype, device=device)
    if layout == "channels_last":
        return torch.randn(n, c, h, w, dtype=dtype, device=device).contiguous(memory_format=CL)
    if layout == "channel_slice":      # NCHW view, group slabs still contiguous (flat path)
        return torch.randn(n, c + 8, h, w, dtype=dtype, device=device)[:, 4:4 + c]
    if layout == "spatial_crop":       # strided pixels (tile path)
        return torch.randn(n, c, h + 2, 2 * w, dtype=dtype, device=device)[:, :, 1:1 + h, ::2]
    if layout == "channels_last_slice":  # a channels_last tensor's channel slice (tile path)
        return torch.randn(n, c + 8, h, w, dtype=dtype, device=device).contiguous(memory_format=CL)[:, 4:4 + c]
    if layout == "frame_stride":       # every other frame of an NCHW tensor (flat path, frame stride)
        return torch.randn(2 * n, c, h, w, dtype=dtype, device=device)[::2]
    raise ValueError(layout)


def make_params(c, dtype=torch.float32, device="cpu"):
    return (1 + 0.3 * torch.randn(c, dtype=dtype, device=device), 0.3 * torch.randn(c, dtype=dtype, device=device))


def ref64(x, groups, w, b, eps=1e-5, activation="silu"):
    d = (lambda t: t.double() if t is not None else None)
    return reference.group_norm_silu(x.double(), groups, d(w), d(b), eps, activation)


def check(x, groups, w, b, tol, activation="silu", backend="triton", eps=1e-5):
    a = tk.group_norm_silu(x, groups, w, b, eps, activation, backend=backend)
    assert a.dtype == x.dtype and a.shape == x.shape
    assert a.is_contiguous(memory_format=expected_format(x)), f"output strides {a.stride()}"
    assert_close(a, ref64(x, groups, w, b, eps, activation), tol, f"{tuple(x.shape)} G={groups} act={activation}")
    return a


@pytest.fixture
def split(request, monkeypatch):
    """Number of chunks each group's (or frame's) statistics are cut into in the interpreter."""
    from tfaa_kernels.triton import group_norm_silu as gns
    monkeypatch.setitem(gns._INTERP, "SPLIT", request.param)
    return request.param


# ----------------------------------------------------------------- CPU (Triton interpreter)
@needs_interp
@pytest.mark.parametrize("split", [1, 3], indirect=True)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "channel_slice", "spatial_crop",
                                    "channels_last_slice", "frame_stride"])
def test_matches_torch_cpu(layout, split, poison):
    """C = 40, G = 8 (5 channels a group, not a power of two), H*W = 35 (not a multiple of any
    block), 3 interpreter channel tiles of 16 (the last partial)."""
    x = make_x(3, 40, 5, 7, layout)
    w, b = make_params(40)
    check(x, 8, w, b, 1e-5)


VARIANTS = ["no_affine", "weight_only", "bias_only", "norm_only", "one_channel_groups", "one_group", "one_pixel"]


def variant_case(variant):
    """(n, c, g, h, w, weight, bias, activation) of a shape/parameter variant: C = 40 in groups of 5,
    3x5 pixels, affine GroupNorm + SiLU unless the variant changes one of them."""
    n, c, g, h, w_ = 2, 40, 8, 3, 5
    act = "silu"
    w, b = make_params(c)
    if variant == "no_affine":
        w = b = None
    elif variant == "weight_only":
        b = None
    elif variant == "bias_only":
        w = None
    elif variant == "norm_only":
        act = None
    elif variant == "one_channel_groups":
        g = c
    elif variant == "one_group":
        g = 1
    elif variant == "one_pixel":
        h = w_ = 1
    return n, c, g, h, w_, w, b, act


@needs_interp
@pytest.mark.parametrize("variant", VARIANTS + ["channels_last_norm_only"])
def test_variants_cpu(variant, poison):
    n, c, g, h, w_, w, b, act = variant_case(variant)
    layout = "nchw"
    if variant == "channels_last_norm_only":
        layout, act = "channels_last", None
    check(make_x(n, c, h, w_, layout), g, w, b, 1e-5, activation=act)


@needs_interp
@pytest.mark.parametrize("split", [1, 3], indirect=True)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_large_mean_cpu(layout, split):
    """x = 100 + randn in fp32: the shifted one-read statistics keep the variance (E[x^2] - E[x]^2
    would lose ~4 of fp32's 7 digits); mean/rstd against float64, the output against torch."""
    from tfaa_kernels.triton.group_norm_silu import _affine
    x = (100.0 + torch.randn(2, 40, 5, 7)).contiguous(memory_format=CL if layout == "channels_last" else
                                                      torch.contiguous_format)
    w, b = make_params(40)
    _, _, mean, rstd = _affine(x, 8, w, b, 1e-5)
    xg = x.double().reshape(2, 8, -1)
    ref_mean = xg.mean(-1)
    ref_rstd = (xg.var(-1, unbiased=False) + 1e-5).rsqrt()
    assert_close(mean, ref_mean, 1e-7, "mean")
    assert_close(rstd, ref_rstd, 1e-5, "rstd")
    a = check(x, 8, w, b, 5e-5)
    if layout == "nchw":  # (torch's CPU channels_last GroupNorm itself is off by ~5e-4 here)
        assert_close(a, F.silu(F.group_norm(x, 8, w, b, 1e-5)), 5e-5, "vs torch fp32")


@needs_interp
def test_triton_backend_differentiable_cpu():
    """backend="triton" with gradients: the kernel forward and backward."""
    x = make_x(2, 16, 3, 5, "channels_last").requires_grad_(True)
    w, b = (t.requires_grad_(True) for t in make_params(16))
    a = check(x, 4, w, b, 1e-5)
    da = torch.randn_like(a)
    grads = torch.autograd.grad(a, [x, w, b], da)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref_grads = torch.autograd.grad(ref64(x64, 4, w64, b64), [x64, w64, b64], da.double())
    for name, g, r, t in zip("xwb", grads, ref_grads, (x, w, b)):
        assert g.dtype == t.dtype, f"d{name} dtype"
        assert_close(g, r, 1e-5, f"d{name}")
    # only some inputs need a gradient
    (gx,) = torch.autograd.grad(tk.group_norm_silu(x, 4, w.detach(), None, backend="triton"), [x], da)
    x64 = x.detach().double().requires_grad_(True)
    (rx,) = torch.autograd.grad(ref64(x64, 4, w.detach(), None), [x64], da.double())
    assert_close(gx, rx, 1e-5, "dx (weight without grad, no bias)")


def check_backward(x, groups, w, b, tol, activation="silu", da_layout=None, backend="triton"):
    """dx, dweight, dbias of ``backend`` (its backward kernels) against float64 autograd of the
    reference, for the inputs that require grad; da in ``da_layout`` (default: a's layout)."""
    a = tk.group_norm_silu(x, groups, w, b, activation=activation, backend=backend)
    da = torch.randn(a.shape, dtype=a.dtype, device=a.device)
    if da_layout is not None:
        da = make_x(*a.shape, da_layout, dtype=a.dtype, device=a.device)
    leaves = [t for t in (x, w, b) if t is not None and t.requires_grad]
    grads = torch.autograd.grad(a, leaves, da)
    d64 = {id(t): t.detach().double().requires_grad_(t.requires_grad) for t in (x, w, b) if t is not None}
    ref_in = [d64[id(t)] if t is not None else None for t in (x, w, b)]
    if w is None and b is not None:  # torch's GroupNorm backward fails with a bias but no weight
        ref_in[1] = torch.ones(x.shape[1], dtype=torch.float64, device=x.device)
    ref = reference.group_norm_silu(ref_in[0], groups, ref_in[1], ref_in[2], 1e-5, activation)
    ref_grads = torch.autograd.grad(ref, [d64[id(t)] for t in leaves], da.double())
    for t, g, r in zip(leaves, grads, ref_grads):
        name = "x" if t is x else ("weight" if t is w else "bias")
        assert g.dtype == t.dtype, f"d{name} dtype"
        assert_close(g, r, tol, f"{tuple(x.shape)} G={groups} act={activation} d{name}")
    assert grads[0].is_contiguous(memory_format=expected_format(x)), "dx must be in x's memory format"
    return grads


@needs_interp
@pytest.mark.parametrize("split", [1, 3], indirect=True)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "channel_slice", "spatial_crop",
                                    "channels_last_slice", "frame_stride"])
def test_backward_kernels_cpu(layout, split, poison):
    """The Triton backward (sums over pixel chunks, the per-group finish, the apply) on every layout,
    C = 40 in groups of 5, H*W = 35, 3 interpreter channel tiles of 16, against float64 autograd."""
    x = make_x(3, 40, 5, 7, layout).requires_grad_(True)
    w, b = (t.requires_grad_(True) for t in make_params(40))
    check_backward(x, 8, w, b, 1e-5)


@needs_interp
@pytest.mark.parametrize("variant", VARIANTS + ["da_channels_last", "da_strided", "x_only"])
def test_backward_variants_cpu(variant, poison):
    n, c, g, h, w_, w, b, act = variant_case(variant)
    da_layout = {"da_channels_last": "channels_last", "da_strided": "spatial_crop"}.get(variant)  # x NCHW
    x = make_x(n, c, h, w_, "nchw").requires_grad_(True)
    w = w.requires_grad_(variant != "x_only") if w is not None else None
    b = b.requires_grad_(variant != "x_only") if b is not None else None
    check_backward(x, g, w, b, 1e-5, activation=act, da_layout=da_layout)


@needs_interp
def test_backward_large_mean_cpu():
    """x = 100 + randn: xhat from the shifted statistics keeps dx and dweight accurate."""
    x = (100.0 + torch.randn(2, 40, 5, 7)).requires_grad_(True)
    w, b = (t.requires_grad_(True) for t in make_params(40))
    check_backward(x, 8, w, b, 5e-5)


@needs_interp
@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_backward_one_element_groups_cpu(activation, layout, poison):
    """Groups of one element (G = C, 1x1 pixels: a UNet's lowest level in a tiny model): the output
    is act(beta) whatever x is, so dx and dweight are exactly zero (the general kernels returned
    rounding noise times 1/sqrt(eps) for dx) and dbias is sum(da * act'(beta))."""
    x = make_x(6, 16, 1, 1, layout).requires_grad_(True)
    w, b = (t.requires_grad_(True) for t in make_params(16))
    a = tk.group_norm_silu(x, 16, w, b, activation=activation, backend="triton")
    da = torch.randn(a.shape)
    dx, dw, db = torch.autograd.grad(a, [x, w, b], da)
    assert torch.count_nonzero(dx) == 0 and torch.count_nonzero(dw) == 0
    assert dx.is_contiguous(memory_format=expected_format(x))
    b64 = b.detach().double().requires_grad_(True)
    ref = reference.group_norm_silu(x.detach().double(), 16, w.detach().double(), b64, 1e-5, activation)
    (rb,) = torch.autograd.grad(ref, [b64], da.double())
    assert_close(db, rb, 1e-5, "dbias")


@needs_interp
def test_backward_deterministic_cpu():
    """Fixed-order sums, no atomics: two backward passes are bitwise equal."""
    x = make_x(3, 40, 5, 7, "channels_last").requires_grad_(True)
    w, b = (t.requires_grad_(True) for t in make_params(40))
    da = torch.randn(3, 40, 5, 7)
    runs = [torch.autograd.grad(tk.group_norm_silu(x, 8, w, b, backend="triton"), [x, w, b], da) for _ in range(2)]
    for g1, g2 in zip(*runs):
        assert torch.equal(g1, g2)


@needs_interp
@pytest.mark.parametrize("affine", [True, False])
def test_opcheck_backward_cpu(affine):
    x = make_x(2, 12, 3, 5, "channels_last")
    da = make_x(2, 12, 3, 5, "nchw")
    w, b = make_params(12) if affine else (None, None)
    torch.library.opcheck(torch.ops.tfaa.group_norm_silu_bwd.default, (da, x, w, b, 4, 1e-5, True, "triton"))


def test_auto_policy(monkeypatch):
    """"auto" takes the kernel (where resolve_backend offers one: CUDA tensors with Triton) only when
    no gradient is needed and not under torch.compile; explicit backends are kept."""
    monkeypatch.setattr(gn_op, "resolve_backend",
                        lambda backend, op, device: "triton" if backend == "auto" else backend)
    x = torch.randn(2, 8, 2, 2)
    w, b = make_params(8)
    pick = gn_op.resolve_group_norm_backend
    assert pick("auto", x, w, b) == "triton"
    assert pick("auto", x, None, None) == "triton"
    assert pick("auto", x.requires_grad_(True), w, b) == "torch"
    with torch.no_grad():
        assert pick("auto", x, w, b) == "triton"
    assert pick("triton", x, w, b) == "triton"
    x = x.detach()
    assert pick("auto", x, w.requires_grad_(True), b) == "torch"
    assert pick("auto", x, None, b.requires_grad_(True)) == "torch"
    with tk.auto_for_cuda_graphs():  # GPU time decides: the kernels also with gradients
        assert pick("auto", x, w, b) == "triton"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert pick("auto", x, None, None) == "torch"
    assert pick("triton", x, None, None) == "triton"


def test_auto_is_reference_on_cpu_and_differentiable():
    x = make_x(2, 12, 3, 3, "channels_last").requires_grad_(True)
    w, b = (t.requires_grad_(True) for t in make_params(12))
    a = tk.group_norm_silu(x, 3, w, b)
    ref = F.silu(F.group_norm(x, 3, w, b, 1e-5))
    assert torch.equal(a, ref) and a.is_contiguous(memory_format=CL)
    a.square().sum().backward()
    assert x.grad is not None and w.grad is not None and b.grad is not None


@needs_interp
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "spatial_crop"])
@pytest.mark.parametrize("affine", [True, False])
def test_opcheck_cpu(layout, affine):
    x = make_x(2, 12, 3, 5, layout)
    w, b = make_params(12) if affine else (None, None)
    torch.library.opcheck(torch.ops.tfaa.group_norm_silu_fwd.default, (x, w, b, 4, 1e-5, True, "triton"))


@needs_interp
def test_opcheck_with_grad_cpu():
    x = make_x(2, 12, 3, 5, "nchw").requires_grad_(True)
    w, b = (t.requires_grad_(True) for t in make_params(12))
    torch.library.opcheck(torch.ops.tfaa.group_norm_silu_fwd.default, (x, w, b, 4, 1e-5, False, "triton"))


@needs_interp
def test_compile_fullgraph_cpu():
    """The custom op under torch.compile(fullgraph=True): forward and the recomputing backward."""
    def f(x, w, b):
        return tk.group_norm_silu(x, 4, w, b, backend="triton")
    x = make_x(2, 12, 3, 3).requires_grad_(True)
    w, b = (t.requires_grad_(True) for t in make_params(12))
    torch._dynamo.reset()
    y = torch.compile(f, fullgraph=True, backend="aot_eager")(x, w, b)
    g = torch.autograd.grad(y.square().sum(), [x, w, b])
    y_e = f(x, w, b)
    g_e = torch.autograd.grad(y_e.square().sum(), [x, w, b])
    assert_close(y, y_e, 1e-6, "compiled forward")
    for name, a, r in zip("xwb", g, g_e):
        assert_close(a, r, 1e-6, f"compiled d{name}")


@needs_interp
def test_fast_silu_fallback_cpu(monkeypatch):
    """If the inline-PTX fast SiLU cannot be compiled (here: no inline asm in the interpreter), the
    apply kernel warns and falls back to the exact SiLU."""
    from tfaa_kernels.triton import group_norm_silu as gns
    monkeypatch.setattr(gns, "_fast_silu", lambda t: True)
    monkeypatch.setattr(gns, "_FAST_SILU_FAILED", False)
    w, b = make_params(16)
    with pytest.warns(UserWarning, match="fast SiLU"):
        check(make_x(2, 16, 3, 3), 4, w, b, 1e-5)
    assert gns._FAST_SILU_FAILED


@pytest.mark.parametrize("backend", ["torch"] + (["triton"] if TRITON_CPU else []))
def test_empty_input(backend):
    x = torch.randn(0, 8, 2, 2, requires_grad=True)
    a = tk.group_norm_silu(x, 2, backend=backend)
    assert a.shape == x.shape
    a.sum().backward()
    assert x.grad.shape == x.shape


def test_autocast_reference_runs_in_autocast_dtype():
    """Under autocast the inputs are cast (as the other ops do) and the output keeps that dtype on
    every backend (the reference does not upcast GroupNorm to fp32 there)."""
    x = torch.randn(2, 8, 3, 3)
    w = torch.randn(8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = tk.group_norm_silu(x, 4, w, None, backend="torch")
    assert a.dtype == torch.bfloat16
    assert torch.equal(a, F.silu(F.group_norm(x.bfloat16(), 4, w.bfloat16())))
    a.float().sum().backward()
    assert w.grad.dtype == torch.float32


def _args():
    return torch.randn(2, 6, 2, 2), torch.randn(6), torch.randn(6)


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(x=torch.randn(6, 2, 2)), ValueError, r"x must have 4 dims \(N, C, H, W\)"),
    (dict(x=torch.ones(2, 6, 2, 2, dtype=torch.int32)), TypeError, "x must be a floating-point tensor"),
    (dict(x=[1.0]), TypeError, "x must be a torch.Tensor"),
    (dict(num_groups=4), ValueError, r"num_groups must be >= 1 and divide C = x.shape\[1\] = 6, got 4"),
    (dict(num_groups=0), ValueError, "num_groups must be >= 1"),
    (dict(num_groups=2.0), TypeError, "num_groups must be an int"),
    (dict(weight=torch.randn(5)), ValueError, r"weight must have shape \(C,\) = \(6,\)"),
    (dict(bias=torch.randn(6, 1)), ValueError, "bias must have 1 dims"),
    (dict(weight=torch.ones(6, dtype=torch.int32)), TypeError, "weight must be a floating-point tensor"),
    (dict(eps=0.0), ValueError, "eps must be a finite number > 0"),
    (dict(eps=float("nan")), ValueError, "eps must be a finite number > 0"),
    (dict(activation="gelu"), ValueError, "activation must be 'silu' or None"),
    (dict(backend="cudnn"), ValueError, "backend must be one of"),
    (dict(backend="cuda"), ValueError, "backend='cuda'"),
])
def test_bad_arguments(kwargs, exc, msg):
    x, w, b = _args()
    args = dict(x=x, num_groups=2, weight=w, bias=b)
    args.update(kwargs)
    with pytest.raises(exc, match=msg):
        tk.group_norm_silu(**args)


@needs_interp
def test_triton_rejects_fp64():
    with pytest.raises(TypeError, match="float64"):
        tk.group_norm_silu(torch.randn(2, 4, 2, 2, dtype=torch.float64), 2, backend="triton")


def test_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        tk.group_norm_silu(torch.randn(2, 4, 2, 2), 2, backend="triton")


# ----------------------------------------------------------------- the temporal conv's composite path
@pytest.mark.parametrize("caller,expected", [("auto", "auto"), ("cuda", "auto"), ("triton", "triton")])
def test_conv_composite_calls_group_norm_silu(caller, expected, monkeypatch):
    """temporal_conv1d(norm=..., activation=...) on the composite path normalizes through
    group_norm_silu, "auto" unless the caller forced "triton"; SiLU alone stays in torch."""
    from tfaa_kernels.ops import conv as conv_op
    calls = []
    monkeypatch.setattr(conv_op, "_fused_backend", lambda backend, device, training=False: "composite")

    def spy(x, groups, w, b, eps, activation, backend):
        calls.append(backend)
        return reference.group_norm_silu(x, groups, w, b, eps, activation)
    monkeypatch.setattr(conv_op, "group_norm_silu", spy)
    monkeypatch.setattr(conv_op, "temporal_conv1d_fwd",
                        lambda x, w, b, f, be: reference.temporal_conv1d(x, w, b, f))
    monkeypatch.setattr(conv_op, "resolve_backend",
                        lambda backend, op, device: "torch" if backend == "auto" else backend)
    x = torch.randn(4, 8, 2, 3)
    w, b = torch.randn(6, 8, 3), torch.randn(6)
    gw, gb = make_params(8)
    y = tk.temporal_conv1d(x, w, b, 2, backend=caller, norm=GroupNormSpec(4, gw, gb), activation="silu")
    assert calls == [expected]
    assert_close(y, reference.group_norm_silu_temporal_conv1d(x.double(), w.double(), b.double(), 2, 4,
                                                              gw.double(), gb.double()), 1e-6)
    tk.temporal_conv1d(x, w, b, 2, backend=caller, activation="silu")
    assert calls == [expected]


@needs_interp
def test_conv_composite_with_triton_kernels_cpu(monkeypatch):
    """The composite path end to end in the interpreter: Triton GroupNorm+SiLU, then the conv kernel;
    forward without gradients and forward+backward."""
    from tfaa_kernels.ops import conv as conv_op
    monkeypatch.setattr(conv_op, "_fused_backend", lambda backend, device, training=False: "composite")
    x = make_x(4, 8, 2, 3, "channels_last").requires_grad_(True)
    w = (torch.randn(6, 8, 3) / 5).requires_grad_(True)
    b = torch.randn(6, requires_grad=True)
    gw, gb = (t.requires_grad_(True) for t in make_params(8))
    norm = GroupNormSpec(4, gw, gb)
    leaves = [x, w, b, gw, gb]
    d64 = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = reference.group_norm_silu_temporal_conv1d(d64[0], d64[1], d64[2], 2, 4, d64[3], d64[4])
    with torch.no_grad():
        y = tk.temporal_conv1d(x, w, b, 2, backend="triton", norm=norm, activation="silu")
    assert_close(y, ref, 1e-5, "composite forward")
    y = tk.temporal_conv1d(x, w, b, 2, backend="triton", norm=norm, activation="silu")
    dy = torch.randn_like(y)
    for name, g, r in zip(["x", "w", "b", "gw", "gb"], torch.autograd.grad(y, leaves, dy),
                          torch.autograd.grad(ref, d64, dy.double())):
        assert_close(g, r, 1e-5, f"composite d{name}")


# ----------------------------------------------------------------- GPU
GPU_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "channel_slice", "spatial_crop"])
@pytest.mark.parametrize("n,c,g,h,w", [
    (32, 320, 32, 64, 64),   # S1: flat statistics in one chunk a group
    (2, 320, 32, 32, 32),    # few frames: statistics split over several programs
    (32, 1280, 32, 8, 8),
    (3, 40, 8, 7, 9),        # odd sizes, 5 channels a group
    (1, 64, 32, 1, 1)])
def test_matches_torch_gpu(dtype, layout, n, c, g, h, w, poison):
    x = make_x(n, c, h, w, layout, dtype=dtype, device="cuda")
    gw, gb = make_params(c, dtype=dtype, device="cuda")
    check(x, g, gw, gb, TOL[dtype])
    check(x, g, None, None, TOL[dtype], activation=None)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "spatial_crop"])
@pytest.mark.parametrize("n,c,g,h,w", [
    (32, 320, 32, 64, 64),   # S1: one pixel chunk a frame
    (2, 320, 32, 32, 32),    # few frames: the sums split over pixel chunks
    (32, 1280, 32, 8, 8),
    (3, 40, 8, 7, 9),        # odd sizes, 5 channels a group
    (1, 64, 16, 1, 1)])      # one pixel, 4 channels a group (with 2 elements a group, as in the
#                              forward test's G = 32, xhat = +-1 whatever x is: dx is ~eps-small and
#                              its relative error meaningless)
def test_backward_matches_torch_gpu(dtype, layout, n, c, g, h, w, poison):
    """The Triton backward kernels (group_norm_silu backend="triton") against float64 autograd."""
    if "triton" not in available_backends("cuda"):
        pytest.skip("Triton not available")
    x = make_x(n, c, h, w, layout, dtype=dtype, device="cuda").requires_grad_(True)
    gw, gb = (t.requires_grad_(True) for t in make_params(c, dtype=dtype, device="cuda"))
    check_backward(x, g, gw, gb, TOL[dtype])
    check_backward(x, g, None, None, TOL[dtype], activation=None, da_layout="nchw")


@pytest.mark.gpu
def test_auto_with_gradients_inside_auto_for_cuda_graphs_gpu():
    """Inside tk.auto_for_cuda_graphs "auto" takes the Triton kernels with gradients too: the call
    must still record the backward (the no-gradient fast path skips the custom op)."""
    x = torch.randn(4, 64, 8, 8, device="cuda").requires_grad_(True)
    w, b = (t.cuda().requires_grad_(True) for t in make_params(64))
    with tk.auto_for_cuda_graphs():
        a = tk.group_norm_silu(x, 16, w, b)
    assert a.requires_grad and a.grad_fn is not None
    da = torch.randn_like(a)
    grads = torch.autograd.grad(a, [x, w, b], da)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref = torch.autograd.grad(reference.group_norm_silu(x64, 16, w64, b64, 1e-5, "silu"), [x64, w64, b64], da.double())
    for g, r, name in zip(grads, ref, ("dx", "dweight", "dbias")):
        assert_close(g, r, 1e-5, name)


@pytest.mark.gpu
def test_backward_deterministic_gpu():
    if "triton" not in available_backends("cuda"):
        pytest.skip("Triton not available")
    x = make_x(2, 320, 32, 32, "channels_last", dtype=torch.bfloat16, device="cuda").requires_grad_(True)
    gw, gb = (t.requires_grad_(True) for t in make_params(320, device="cuda"))
    da = torch.randn(2, 320, 32, 32, dtype=torch.bfloat16, device="cuda")
    runs = [torch.autograd.grad(tk.group_norm_silu(x, 32, gw, gb, backend="triton"), [x, gw, gb], da)
            for _ in range(2)]
    for g1, g2 in zip(*runs):
        assert torch.equal(g1, g2)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_large_mean_gpu(layout):
    x = make_x(2, 320, 32, 32, layout, device="cuda").add_(100.0)
    gw, gb = make_params(320, device="cuda")
    check(x, 32, gw, gb, 5e-5)


@pytest.mark.gpu
def test_fp32_params_bf16_input_gpu():
    x = make_x(4, 64, 8, 8, "channels_last", dtype=torch.bfloat16, device="cuda")
    gw, gb = make_params(64, device="cuda")
    check(x, 32, gw, gb, 2e-2)


@pytest.mark.gpu
def test_auto_policy_gpu(monkeypatch):
    """CUDA + no grad: the kernel; with grad: the reference, correct and differentiable."""
    from tfaa_kernels import backends
    if "triton" not in available_backends("cuda"):
        pytest.skip("Triton not available")
    impl = backends.get_impl("group_norm_silu_fwd", "triton")
    calls = []
    monkeypatch.setitem(backends._IMPLS, ("group_norm_silu_fwd", "triton"),
                        lambda *a: calls.append(1) or impl(*a))
    x = make_x(4, 64, 8, 8, "nchw", dtype=torch.bfloat16, device="cuda")
    gw, gb = make_params(64, dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        a = tk.group_norm_silu(x, 32, gw, gb)
    assert calls == [1]
    assert_close(a, ref64(x, 32, gw, gb), 2e-2)
    xg = x.clone().requires_grad_(True)
    a = tk.group_norm_silu(xg, 32, gw, gb)
    assert calls == [1]
    assert_close(a, ref64(x, 32, gw, gb), 2e-2)
    a.float().sum().backward()
    assert xg.grad is not None


@pytest.mark.gpu
def test_opcheck_gpu():
    x = make_x(4, 64, 5, 7, "channels_last", dtype=torch.bfloat16, device="cuda")
    gw, gb = make_params(64, device="cuda")
    torch.library.opcheck(torch.ops.tfaa.group_norm_silu_fwd.default, (x, gw, gb, 32, 1e-5, True, "triton"))


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_int64_offsets_gpu(layout):
    """More than 2^31 elements in x and a: the last frames against the reference."""
    c, h, w = 64, 512, 512
    n = (2 ** 31) // (c * h * w) + 2
    x = make_x(n, c, h, w, layout, dtype=torch.bfloat16, device="cuda")
    assert x.numel() > 2 ** 31
    a = tk.group_norm_silu(x, 32, backend="triton")
    last = slice(n - 2, n)
    assert_close(a[last], ref64(x[last], 32, None, None), 2e-2, "last frames")
    del a
    # the backward kernels: dx of the last frames (da nonzero only there)
    xg = x.requires_grad_(True)
    da = torch.zeros_like(x)
    da[last].normal_()
    (dx,) = torch.autograd.grad(tk.group_norm_silu(xg, 32, backend="triton"), [xg], da)
    x64 = x[last].detach().double().requires_grad_(True)
    (ref,) = torch.autograd.grad(ref64(x64, 32, None, None), [x64], da[last].double())
    assert_close(dx[last], ref, 2e-2, "dx of the last frames")
