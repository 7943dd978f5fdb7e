"""temporal_conv1d (plain and fused GroupNorm -> SiLU prologue): kernel backends against the float64
reference, custom-op registration, torch.compile, determinism and errors for bad input. CPU runs the
Triton kernels in the interpreter (fp32, tiny shapes); tests marked gpu run them on CUDA in
fp32/bf16/fp16."""
import pytest
import torch
import torch.nn.functional as F

import tfaa_kernels as tk
from tfaa_kernels import GroupNormSpec, reference
from tfaa_kernels.backends import available_backends, has_impl
from helpers import TOL, assert_close

CPU_KERNELS = [b for b in ("triton",) if b in available_backends("cpu")]
GPU_KERNELS = [b for b in ("triton", "cuda") if torch.cuda.is_available() and b in available_backends("cuda")
               and has_impl("temporal_conv1d", b)]
FUSED_GPU_KERNELS = [b for b in GPU_KERNELS if has_impl("temporal_conv1d_gn_silu", b)]
CL = torch.channels_last


def expected_format(x):
    if x.is_contiguous(memory_format=CL) and not x.is_contiguous():
        return CL
    return torch.contiguous_format


def make_inputs(bf, c_in, c_out, h, w, kk, dtype=torch.float32, device="cpu", layout="nchw", bias=True):
    x = torch.randn(bf, c_in, h, w, dtype=dtype, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    weight = torch.randn(c_out, c_in, kk, dtype=dtype, device=device) / (c_in * kk) ** 0.5
    b = torch.randn(c_out, dtype=dtype, device=device) if bias else None
    return [t.requires_grad_(True) if t is not None else None for t in (x, weight, b)]


def make_norm(c_in, groups, dtype=torch.float32, device="cpu", affine=True):
    if not affine:
        return GroupNormSpec(groups, None, None, 1e-5)
    gw = (1 + 0.3 * torch.randn(c_in, dtype=dtype, device=device)).requires_grad_(True)
    gb = (0.3 * torch.randn(c_in, dtype=dtype, device=device)).requires_grad_(True)
    return GroupNormSpec(groups, gw, gb, 1e-5)


def check_against_reference(x, weight, bias, num_frames, backend, tol, norm=None, activation=None):
    """Forward and all gradients of ``backend`` against the float64 reference on the same inputs."""
    out = tk.temporal_conv1d(x, weight, bias, num_frames, backend=backend, norm=norm, activation=activation)
    fmt = expected_format(x)
    assert out.dtype == x.dtype and out.is_contiguous(memory_format=fmt)
    inputs = [x, weight, bias] + ([norm.weight, norm.bias] if norm is not None else [])
    names = ["x", "weight", "bias", "norm.weight", "norm.bias"]
    keep = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
    d64 = [t.detach().double().requires_grad_(True) if t is not None else None for t in inputs]
    if norm is None and activation is None:
        ref = reference.temporal_conv1d(d64[0], d64[1], d64[2], num_frames)
    else:
        ref = reference.group_norm_silu_temporal_conv1d(
            d64[0], d64[1], d64[2], num_frames, norm.num_groups if norm is not None else None,
            d64[3] if norm is not None else None, d64[4] if norm is not None else None,
            norm.eps if norm is not None else 1e-5, activation)
    what = f"{backend} norm={norm is not None} act={activation}"
    assert_close(out, ref, tol, f"{what} forward")
    dy = torch.randn_like(out)
    grads = torch.autograd.grad(out, [inputs[i] for i in keep], dy)
    ref_grads = torch.autograd.grad(ref, [d64[i] for i in keep], dy.double())
    for i, g, r in zip(keep, grads, ref_grads):
        assert g.dtype == inputs[i].dtype, f"{what} d{names[i]} dtype"
        assert_close(g, r, tol, f"{what} d{names[i]}")
    dx = grads[0]
    assert dx.is_contiguous(memory_format=fmt), "dx must be in x's memory format"


# ----------------------------------------------------------------- CPU (Triton interpreter)
@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("kk", [1, 3, 5])
@pytest.mark.parametrize("num_frames", [1, 2, 3, 5])
def test_kernel_cpu(backend, layout, kk, num_frames, poison):
    """C_in != C_out, neither a multiple of the 16-wide interpreter tile, odd H*W."""
    x, w, b = make_inputs(2 * num_frames, 20, 18, 3, 5, kk, layout=layout)
    check_against_reference(x, w, b, num_frames, backend, 1e-5)


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_kernel_cpu_no_bias_one_clip(backend, poison):
    x, w, _ = make_inputs(4, 17, 33, 2, 9, 3, bias=False)
    check_against_reference(x, w, None, 4, backend, 1e-5)


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("view", ["channel_slice", "spatial_crop", "channels_last_slice", "frame_stride"])
def test_kernel_cpu_strided_views(backend, view, poison):
    """Inputs that are views: channel slices, spatial crops (H, W not mergeable), every other image."""
    if view == "channel_slice":
        base = torch.randn(6, 30, 4, 5, requires_grad=True)
        x = base[:, 5:25]
    elif view == "spatial_crop":
        base = torch.randn(6, 20, 6, 7, requires_grad=True)
        x = base[:, :, 1:5, ::2]
    elif view == "channels_last_slice":
        base = torch.randn(6, 30, 4, 5).contiguous(memory_format=CL).requires_grad_(True)
        x = base[:, 3:23]
    else:
        base = torch.randn(12, 20, 3, 4, requires_grad=True)
        x = base[::2]
    _, w, b = make_inputs(1, 20, 24, 1, 1, 3)
    check_against_reference(x, w, b, 3, backend, 1e-5)


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_kernel_cpu_broadcast_grad(backend, poison):
    """y.sum().backward() hands the backward a stride-0 (expanded) dy."""
    x, w, b = make_inputs(6, 20, 18, 3, 4, 3, layout="channels_last")
    tk.temporal_conv1d(x, w, b, 3, backend=backend).sum().backward()
    xd, wd, bd = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    reference.temporal_conv1d(xd, wd, bd, 3).sum().backward()
    for g, r, n in ((x.grad, xd.grad, "dx"), (w.grad, wd.grad, "dw"), (b.grad, bd.grad, "db")):
        assert_close(g, r, 1e-5, n)


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("fused", [False, True])
def test_backward_op_cpu_cropped_dy(backend, fused, poison):
    """The backward entry points with a dy whose (H, W) do not merge into one stride."""
    x, w, _ = (t.detach() for t in make_inputs(6, 20, 18, 3, 4, 3))
    dy = torch.randn(6, 18, 3, 8)[..., ::2]
    xd, wd = (t.double().requires_grad_(True) for t in (x, w))
    if fused:
        gw, gb = torch.randn(20), torch.randn(20)
        dx, dw, db, _, _ = torch.ops.tfaa.temporal_conv1d_gn_silu_bwd(dy, x, w, gw, gb, 3, 5, 1e-5, True, True,
                                                                       backend)
        ref = reference.group_norm_silu_temporal_conv1d(xd, wd, None, 3, 5, gw.double(), gb.double())
    else:
        dx, dw, db = torch.ops.tfaa.temporal_conv1d_bwd(dy, x, w, 3, True, backend)
        ref = reference.temporal_conv1d(xd, wd, None, 3)
    gx, gw_ = torch.autograd.grad(ref, [xd, wd], dy.double())
    assert_close(dx, gx, 1e-5, "dx")
    assert_close(dw, gw_, 1e-5, "dw")
    assert_close(db, dy.double().sum((0, 2, 3)), 1e-5, "db")


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("num_frames,kk", [(1, 3), (3, 3), (2, 5), (3, 1)])
def test_fused_cpu(backend, layout, num_frames, kk, poison):
    """GroupNorm(4 groups of 5 channels) -> SiLU -> conv, every gradient."""
    x, w, b = make_inputs(2 * num_frames, 20, 18, 3, 5, kk, layout=layout)
    with torch.no_grad():
        x.mul_(2.0).add_(0.7)  # non-zero mean and non-unit std per group
    check_against_reference(x, w, b, num_frames, backend, 1e-5, norm=make_norm(20, 4), activation="silu")


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("variant", ["no_affine", "norm_only", "silu_only", "view"])
def test_fused_cpu_variants(backend, variant, poison):
    x, w, b = make_inputs(6, 16, 12, 3, 3, 3)
    norm, act = make_norm(16, 8), "silu"
    if variant == "no_affine":
        norm = make_norm(16, 2, affine=False)
    elif variant == "norm_only":
        act = None
    elif variant == "silu_only":
        norm = None
    else:
        base = torch.randn(6, 24, 3, 3, requires_grad=True)
        x = base[:, 4:20]
    check_against_reference(x, w, b, 3, backend, 1e-5, norm=norm, activation=act)


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "view"])
@pytest.mark.parametrize("variant", ["norm_silu", "norm_only", "silu_only"])
def test_fused_cpu_materialized(backend, layout, variant, poison, monkeypatch):
    """The fused layer for wide C_out: act(GroupNorm(x)) written once, then the plain GEMM (forward)
    and the plain weight gradient (backward)."""
    from tfaa_kernels.triton import temporal_conv as tc
    monkeypatch.setattr(tc, "_FUSE_MAX_COUT", 0)
    if layout == "view":
        base = torch.randn(6, 26, 3, 5, requires_grad=True)
        x = base[:, 3:23]
        _, w, b = make_inputs(1, 20, 18, 1, 1, 3)
    else:
        x, w, b = make_inputs(6, 20, 18, 3, 5, 3, layout=layout)
    norm = None if variant == "silu_only" else make_norm(20, 4)
    act = None if variant == "norm_only" else "silu"
    check_against_reference(x, w, b, 3, backend, 1e-5, norm=norm, activation=act)


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_fused_cpu_fp32_norm_params_with_module(backend):
    """GroupNormSpec.from_module of an nn.GroupNorm: gradients reach the module's parameters."""
    gn = torch.nn.GroupNorm(4, 16)
    torch.nn.init.normal_(gn.weight)
    torch.nn.init.normal_(gn.bias)
    x, w, b = make_inputs(4, 16, 8, 2, 3, 3)
    y = tk.temporal_conv1d(x, w, b, 2, backend=backend, norm=GroupNormSpec.from_module(gn), activation="silu")
    y_ref = reference.temporal_conv1d(F.silu(gn(x)), w, b, 2)
    assert_close(y, y_ref, 1e-5)
    g = torch.autograd.grad(y.square().sum(), [gn.weight, gn.bias])
    g_ref = torch.autograd.grad(y_ref.square().sum(), [gn.weight, gn.bias])
    assert_close(g[0], g_ref[0], 1e-5, "dgamma")
    assert_close(g[1], g_ref[1], 1e-5, "dbeta")


def _dw_against_reference(backend, layout, num_frames, kk, fused, clips=2, c_in=20, c_out=18, h=5, w=7):
    """dweight and dbias (fused into the weight-gradient kernel) of the backward entry point against
    the float64 reference (dx too)."""
    x, wt, _ = (t.detach() for t in make_inputs(clips * num_frames, c_in, c_out, h, w, kk, layout=layout))
    dy = torch.randn(clips * num_frames, c_out, h, w)
    if layout == "channels_last":
        dy = dy.contiguous(memory_format=CL)
    xd, wd = (t.double().requires_grad_(True) for t in (x, wt))
    if fused:
        gw, gb = 1 + 0.3 * torch.randn(c_in), 0.3 * torch.randn(c_in)
        x.mul_(2.0).add_(0.7)
        xd = x.double().requires_grad_(True)
        dx, dw, db, _, _ = torch.ops.tfaa.temporal_conv1d_gn_silu_bwd(dy, x, wt, gw, gb, num_frames, 4, 1e-5, True,
                                                                       True, backend)
        ref = reference.group_norm_silu_temporal_conv1d(xd, wd, None, num_frames, 4, gw.double(), gb.double())
    else:
        dx, dw, db = torch.ops.tfaa.temporal_conv1d_bwd(dy, x, wt, num_frames, True, backend)
        ref = reference.temporal_conv1d(xd, wd, None, num_frames)
    gx, gw_ = torch.autograd.grad(ref, [xd, wd], dy.double())
    assert_close(dw, gw_, 1e-5, f"dw F={num_frames} K={kk} fused={fused}")
    assert_close(dx, gx, 1e-5, f"dx F={num_frames} K={kk} fused={fused}")
    assert db.dtype == wt.dtype
    assert_close(db, dy.double().sum((0, 2, 3)), 1e-5, f"db F={num_frames} K={kk} fused={fused}")


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("kk", [1, 3, 5, 7])
@pytest.mark.parametrize("num_frames", [1, 2, 3, 5])
def test_dw_taps_cpu(backend, layout, kk, num_frames, poison):
    """The weight-gradient kernel, one program per (channel tiles, tap), each tap looping over the
    frames whose source frame lies in the clip (none for |t - K//2| >= F: dW must be 0 there);
    35 pixels = 3 blocks of 16 over 2 clips, 4 splits -> uneven ranges."""
    _dw_against_reference(backend, layout, num_frames, kk, fused=False)


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("split", [1, 2, 7, 40])
@pytest.mark.parametrize("fused", [False, True])
def test_dw_splits_cpu(backend, split, fused, poison, monkeypatch):
    """Any number of splits of each tap's steps (2 clips x 3 frames x 3 pixel blocks: 18 steps for the
    centre tap, 12 for the others): one, uneven ranges, more splits than steps (empty ranges write
    zero partials), plain and with the GN+SiLU prologue."""
    from tfaa_kernels.triton import temporal_conv as tc
    monkeypatch.setitem(tc._INTERP_DW, "SPLIT", split)
    _dw_against_reference(backend, "channels_last" if fused else "nchw", 3, 3, fused=fused)


def test_dw_split_rule():
    """The split fills one wave of _DW_PROGRAMS_PER_SM programs an SM at 128 x 128 tiles, at least
    1 and at most the steps: S2 (300 programs + 10 bias) 1, 32x32 C640 3, S1 8 on 132 SMs."""
    from tfaa_kernels.triton import temporal_conv as tc
    assert tc._dw_split(1280, 1280, 3, 2 * 16 * 4, True, 132) == 1
    assert tc._dw_split(640, 640, 3, 2 * 16 * 16, True, 132) == 3
    assert tc._dw_split(320, 320, 3, 2 * 16 * 64, True, 132) == 8
    assert tc._dw_split(320, 320, 3, 5, True, 132) == 5
    assert tc._dw_split(8, 8, 1, 1000, False, 132) == 264


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("tma", [0, 1])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("num_frames,kk,fused", [(3, 3, False), (5, 5, False), (1, 3, True), (4, 3, True)])
def test_tma_and_pointer_paths_cpu(backend, tma, layout, num_frames, kk, fused, poison, monkeypatch):
    """Both ways the GEMM and weight-gradient kernels read frames, on shapes a TMA descriptor can tile
    (fp32: pixel rows / channel rows of 16-byte multiples): 20 pixels = 16 + a tail of 4, channels
    24 and 40 = 16-blocks + tails, out-of-clip taps that the descriptor must read as zeros."""
    from tfaa_kernels.triton import temporal_conv as tc
    from tfaa_kernels.triton._tma import tma_orientation
    monkeypatch.setitem(tc._INTERP_GEMM, "TMA", tma)
    monkeypatch.setitem(tc._INTERP_DW, "TMA", tma)
    x, wt, b = make_inputs(2 * num_frames, 24, 40, 4, 5, kk, layout=layout)
    assert tma_orientation(x.detach(), num_frames) is (layout == "channels_last")
    norm = make_norm(24, 4) if fused else None
    check_against_reference(x, wt, b, num_frames, backend, 1e-5, norm=norm, activation="silu" if fused else None)
    _dw_against_reference(backend, layout, num_frames, kk, fused, c_in=24, c_out=40, h=4, w=5)


def test_tail_tiles_rule():
    """The GEMM's split tail: the last wave's tiles when it is at most half full."""
    from tfaa_kernels.triton import temporal_conv as tc
    assert tc._tail_tiles(320, 132) == 56      # S2 forward, 128 x 256 tiles on an H100: 3 waves -> 2.5
    assert tc._tail_tiles(640, 132) == 0       # last wave 112 of 132: no split
    assert tc._tail_tiles(264, 132) == 0       # whole waves
    assert tc._tail_tiles(50, 132) == 50       # one partial wave
    assert tc._tail_tiles(100, 132) == 0
    assert tc._tail_tiles(100, 0) == 0         # unknown slots


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("tma", [0, 1])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("slots", [7, 9, 10])
def test_split_tail_cpu(backend, tma, layout, slots, poison, monkeypatch):
    """The GEMM with its last tiles run as half-width programs (forward and input gradient): 6 frames
    x 2 pixel blocks (16 + 4) x 2 output-channel blocks (32 + 8) = 24 tiles; 7 slots split the last
    3 tiles, 10 the last 4 (incl. the 8-channel block, whose second half is all out of bounds), 9 none
    (last wave 6 of 9); the input gradient's 12 tiles (one 32-channel block) split none, 3 and 2 of
    them. Forward and gradients against the reference."""
    from tfaa_kernels.triton import temporal_conv as tc
    monkeypatch.setitem(tc._INTERP_GEMM, "TMA", tma)
    monkeypatch.setitem(tc._INTERP_GEMM, "BLOCK_CO", 32)
    monkeypatch.setattr(tc, "_INTERP_SLOTS", slots)
    calls = []
    grid_tiles = tc._tail_tiles
    monkeypatch.setattr(tc, "_tail_tiles", lambda tiles, s: calls.append((tiles, s)) or grid_tiles(tiles, s))
    x, wt, b = make_inputs(6, 24, 40, 4, 5, 3, layout=layout)
    check_against_reference(x, wt, b, 3, backend, 1e-5)
    assert (24, slots) in calls


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("fused", [False, True])
def test_bias_grad_flag_cpu(backend, fused, poison):
    """need_bias_grad=False: dbias is zeros (C_out,) in weight's dtype and dweight is bitwise the
    same as with the bias gradient fused into the weight-gradient kernel."""
    x, wt, _ = (t.detach() for t in make_inputs(6, 20, 18, 5, 7, 3))
    dy = torch.randn(6, 18, 5, 7)
    gw, gb = torch.randn(20), torch.randn(20)
    out = {}
    for need in (False, True):
        if fused:
            out[need] = torch.ops.tfaa.temporal_conv1d_gn_silu_bwd(dy, x, wt, gw, gb, 3, 4, 1e-5, True, need,
                                                                   backend)[:3]
        else:
            out[need] = torch.ops.tfaa.temporal_conv1d_bwd(dy, x, wt, 3, need, backend)
    (dx0, dw0, db0), (dx1, dw1, db1) = out[False], out[True]
    assert db0.shape == (18,) and db0.dtype == wt.dtype and not db0.any()
    assert torch.equal(dw0, dw1) and torch.equal(dx0, dx1)
    assert_close(db1, dy.double().sum((0, 2, 3)), 1e-5, "db")


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_deterministic_cpu(backend):
    x, w, b = make_inputs(12, 20, 18, 4, 4, 3)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            y = tk.temporal_conv1d(x, w, b, 3, backend=backend)
            runs.append(torch.autograd.grad(y, [x, w, b], torch.ones_like(y) * 0.5 + y.detach()))
    finally:
        torch.use_deterministic_algorithms(was)
    for a, c in zip(*runs):
        assert torch.equal(a, c)


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_opcheck_cpu(backend, layout):
    x, w, b = make_inputs(6, 16, 12, 2, 3, 3, layout=layout)
    x, w, b = x.detach(), w.detach(), b.detach()
    torch.library.opcheck(torch.ops.tfaa.temporal_conv1d_fwd.default, (x, w, b, 3, backend))
    dy = torch.randn(6, 12, 2, 3).contiguous(memory_format=expected_format(x))
    torch.library.opcheck(torch.ops.tfaa.temporal_conv1d_bwd.default, (dy, x, w, 3, True, backend))
    gw, gb = torch.randn(16), torch.randn(16)
    torch.library.opcheck(torch.ops.tfaa.temporal_conv1d_gn_silu_fwd.default,
                          (x, w, b, gw, gb, 3, 4, 1e-5, True, backend))
    torch.library.opcheck(torch.ops.tfaa.temporal_conv1d_gn_silu_bwd.default,
                          (dy, x, w, gw, gb, 3, 4, 1e-5, True, True, backend))


class _TinyConvBlock(torch.nn.Module):
    """Two layers of GroupNorm -> SiLU -> temporal conv with a residual (DESIGN.md §2, shortened)."""

    def __init__(self, c=16, groups=4, backend="auto", fused=True):
        super().__init__()
        self.norms = torch.nn.ModuleList(torch.nn.GroupNorm(groups, c) for _ in range(2))
        self.convs = torch.nn.ModuleList(torch.nn.Conv1d(c, c, 3) for _ in range(2))
        self.backend, self.fused = backend, fused

    def forward(self, x, num_frames: int):
        h = x
        for norm, conv in zip(self.norms, self.convs):
            if self.fused:
                h = tk.temporal_conv1d(h, conv.weight, conv.bias, num_frames, backend=self.backend,
                                       norm=GroupNormSpec.from_module(norm),
                                       activation="silu")
            else:
                h = tk.temporal_conv1d(F.silu(norm(h)), conv.weight, conv.bias, num_frames, backend=self.backend)
        return x + h


def _compile_matches_eager(m, x, num_frames, tol, backend=None):
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, **({"backend": backend} if backend else {}))
    y = compiled(x, num_frames)
    y.float().square().sum().backward()
    g_c = x.grad.clone()
    x.grad = None
    y_e = m(x, num_frames)
    y_e.float().square().sum().backward()
    assert_close(y, y_e, tol, "compiled forward")
    assert_close(g_c, x.grad, tol, "compiled dx")


@pytest.mark.parametrize("backend", CPU_KERNELS)
@pytest.mark.parametrize("fused", [False, True])
def test_compile_fullgraph_cpu(backend, fused):
    m = _TinyConvBlock(backend=backend, fused=fused)
    x = torch.randn(6, 16, 3, 3, requires_grad=True)
    _compile_matches_eager(m, x, 3, 1e-6, backend="aot_eager")


# ----------------------------------------------------------------- reference path, errors, edge cases
def test_gradcheck_reference_fp64():
    x, w, b = (t.detach().double().requires_grad_(True) for t in make_inputs(6, 3, 4, 2, 2, 3))
    assert torch.autograd.gradcheck(lambda x, w, b: tk.temporal_conv1d(x, w, b, 3, backend="torch"), (x, w, b))
    gw = torch.randn(3, dtype=torch.float64, requires_grad=True)
    gb = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def fused(x, w, b, gw, gb):
        return tk.temporal_conv1d(x, w, b, 3, backend="torch", norm=GroupNormSpec(3, gw, gb, 1e-5),
                                  activation="silu")
    assert torch.autograd.gradcheck(fused, (x, w, b, gw, gb))


def test_fused_reference_matches_modules():
    """The fused reference is exactly nn.GroupNorm -> SiLU -> reference conv, in x's memory format."""
    gn = torch.nn.GroupNorm(2, 8)
    x = torch.randn(4, 8, 3, 3).contiguous(memory_format=CL)
    w, b = torch.randn(5, 8, 3), torch.randn(5)
    y = reference.group_norm_silu_temporal_conv1d(x, w, b, 2, 2, gn.weight, gn.bias, gn.eps)
    assert y.is_contiguous(memory_format=CL)
    assert torch.allclose(y, reference.temporal_conv1d(F.silu(gn(x)), w, b, 2), atol=1e-6)


def test_auto_is_reference_on_cpu():
    x, w, b = make_inputs(4, 6, 5, 2, 2, 3)
    assert torch.equal(tk.temporal_conv1d(x, w, b, 2), reference.temporal_conv1d(x, w, b, 2))
    norm = make_norm(6, 3)
    assert torch.equal(tk.temporal_conv1d(x, w, b, 2, norm=norm, activation="silu"),
                       reference.group_norm_silu_temporal_conv1d(x, w, b, 2, 3, norm.weight, norm.bias))


@pytest.mark.parametrize("backend", ["torch"] + CPU_KERNELS)
@pytest.mark.parametrize("fused", [False, True])
def test_empty_inputs(backend, fused):
    x, w, b = make_inputs(0, 4, 3, 2, 2, 3)
    kw = dict(norm=GroupNormSpec(2), activation="silu") if fused else {}
    y = tk.temporal_conv1d(x, w, b, 2, backend=backend, **kw)
    assert y.shape == (0, 3, 2, 2)
    y.sum().backward()
    assert x.grad.shape == x.shape


def _conv_args():
    x = torch.randn(4, 6, 2, 2)
    return x, torch.randn(5, 6, 3), torch.randn(5)


@pytest.mark.parametrize("change,exc,msg", [
    (lambda x, w, b: (x, torch.randn(5, 7, 3), b), ValueError, r"C_in = x.shape\[1\] = 6"),
    (lambda x, w, b: (x, torch.randn(5, 6, 2), b), ValueError, "must be odd"),
    (lambda x, w, b: (x, torch.randn(5, 6), b), ValueError, "weight must have 3 dims"),
    (lambda x, w, b: (x, w, torch.randn(4)), ValueError, "bias must have C_out = 5"),
    (lambda x, w, b: (x[0], w, b), ValueError, "x must have 4 dims"),
    (lambda x, w, b: (x, w.double(), b), TypeError, "same dtype"),
    (lambda x, w, b: (x.numpy(), w, b), TypeError, "x must be a torch.Tensor"),
])
def test_bad_tensors(change, exc, msg):
    x, w, b = change(*_conv_args())
    with pytest.raises(exc, match=msg):
        tk.temporal_conv1d(x, w, b, 2)


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(num_frames=3), ValueError, "divisible by num_frames"),
    (dict(num_frames=0), ValueError, "num_frames must be >= 1"),
    (dict(num_frames=2.0), TypeError, "num_frames must be an int"),
    (dict(backend="cudnn"), ValueError, "backend must be one of"),
    (dict(activation="gelu"), ValueError, "activation must be 'silu' or None"),
    (dict(norm=(2,)), TypeError, "norm must be a GroupNormSpec"),
    (dict(norm=GroupNormSpec(4)), ValueError, r"norm.num_groups must be >= 1 and divide C_in = x.shape\[1\] = 6"),
    (dict(norm=GroupNormSpec(0)), ValueError, "num_groups must be >= 1"),
    (dict(norm=GroupNormSpec(2.0)), TypeError, "num_groups must be an int"),
    (dict(norm=GroupNormSpec(2, eps=0.0)), ValueError, "norm.eps must be a finite number > 0"),
    (dict(norm=GroupNormSpec(2, torch.randn(5))), ValueError, r"norm.weight must have shape \(C_in,\) = \(6,\)"),
    (dict(norm=GroupNormSpec(2, None, torch.randn(6, 1))), ValueError, "norm.bias must have 1 dims"),
    (dict(norm=GroupNormSpec(2, torch.ones(6, dtype=torch.int32))), TypeError, "floating-point"),
])
def test_bad_arguments(kwargs, exc, msg):
    x, w, b = _conv_args()
    args = dict(num_frames=2)
    args.update(kwargs)
    with pytest.raises(exc, match=msg):
        tk.temporal_conv1d(x, w, b, **args)


def test_from_module_rejects_other_modules():
    with pytest.raises(TypeError, match="module must be a torch.nn.GroupNorm"):
        GroupNormSpec.from_module(torch.nn.LayerNorm(4))


@pytest.mark.parametrize("fused", [False, True])
def test_kernel_backend_rejects_fp64(fused):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    kw = dict(norm=GroupNormSpec(2), activation="silu") if fused else {}
    for be in (GPU_KERNELS if torch.cuda.is_available() else CPU_KERNELS):
        x, w, b = (t.double().to(dev) for t in _conv_args())
        with pytest.raises(TypeError, match="float64"):
            tk.temporal_conv1d(x, w, b, 2, backend=be, **kw)


def test_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        tk.temporal_conv1d(*_conv_args(), 2, backend="triton")


# ----------------------------------------------------------------- GPU
GPU_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture
def no_tf32():
    """fp32 dots stay IEEE (the kernels follow torch.backends.cuda.matmul.allow_tf32)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("num_frames,c_in,c_out,h,w,kk", [
    (1, 64, 96, 8, 8, 3), (16, 320, 320, 16, 16, 3), (3, 40, 72, 7, 9, 5), (5, 130, 66, 5, 13, 1),
    (16, 1280, 1280, 4, 4, 3)])
def test_kernel_gpu(backend, dtype, layout, num_frames, c_in, c_out, h, w, kk, poison, no_tf32):
    x, wt, b = make_inputs(2 * num_frames, c_in, c_out, h, w, kk, dtype=dtype, device="cuda", layout=layout)
    check_against_reference(x, wt, b, num_frames, backend, TOL[dtype])


def _gemm_configs_16():
    """The GEMM kernel's 16-bit (tensor-core, BLOCK_CI = 64) configurations, by index and name."""
    from tfaa_kernels.triton import temporal_conv as tc
    return [(i, "{BLOCK_P}x{BLOCK_CO}x{BLOCK_CI}".format(**c.kwargs) + f"_w{c.num_warps}_s{c.num_stages}")
            for i, c in enumerate(tc._gemm_configs()) if c.kwargs["BLOCK_CI"] == 64]


def _dw_configs_16():
    """The weight-gradient kernel's 16-bit (tensor-core, BLOCK_CI > 32) configurations, by index and name."""
    from tfaa_kernels.triton import temporal_conv as tc
    return [(i, "{BLOCK_P}x{BLOCK_CO}x{BLOCK_CI}_tma{TMA}".format(**c.kwargs) + f"_w{c.num_warps}_s{c.num_stages}")
            for i, c in enumerate(tc._dw_configs()) if c.kwargs["BLOCK_CI"] > 32]


def _gemm_and_dw_cases(case):
    """Forward and gradients on shapes with pixel and channel tails and odd clips: nchw_k3 (99 pixels:
    a 198-byte row, not the 16-byte multiple a TMA descriptor needs, so the pointer path),
    nchw_k3_tma (80 pixels, descriptors where the config asks), channels_last_k5_fused (64 -> 72 channels, descriptor-aligned rows)."""
    from tfaa_kernels.triton._tma import tma_orientation
    if case.startswith("nchw_k3"):
        h, w = (9, 11) if case == "nchw_k3" else (8, 10)
        x, wt, b = make_inputs(2 * 5, 96, 136, h, w, 3, dtype=torch.bfloat16, device="cuda")
        assert tma_orientation(x.detach(), 5) is (None if case == "nchw_k3" else False)
        check_against_reference(x, wt, b, 5, "triton", 2e-2)
    else:
        x, wt, b = make_inputs(2 * 4, 64, 72, 7, 9, 5, dtype=torch.bfloat16, device="cuda", layout="channels_last")
        assert tma_orientation(x.detach(), 4) is True
        norm = make_norm(64, 16, dtype=torch.bfloat16, device="cuda")
        check_against_reference(x, wt, b, 4, "triton", 2e-2, norm=norm, activation="silu")


GEMM_DW_CASES = ["nchw_k3", "nchw_k3_tma", "channels_last_k5_fused"]


@pytest.mark.gpu
@pytest.mark.parametrize("index", [i for i, _ in _gemm_configs_16()], ids=[n for _, n in _gemm_configs_16()])
@pytest.mark.parametrize("case", GEMM_DW_CASES)
def test_every_gemm_config_gpu(index, case, poison, monkeypatch):
    """Each bf16 GEMM configuration the autotuner may pick (the GPU tests otherwise run the first
    one only, TFAA_AUTOTUNE=0), forced."""
    from tfaa_kernels.triton import temporal_conv as tc
    monkeypatch.setattr(tc, "_GEMM_FORCE", tc._gemm_configs()[index])
    _gemm_and_dw_cases(case)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_split_tail_gpu(layout, poison, monkeypatch):
    """The 128 x 256 TMA tile (one program an SM) with whole tiles and a split tail in one grid:
    40 frames x 2 pixel blocks x 2 output-channel blocks (456 = 256 + 200: the last block's second
    half partly out of bounds) = 160 tiles, of which the last 160 % SMs (at most half a wave) run
    as half-width programs, forward and input gradient (80 tiles: one partial wave, all split)."""
    from tfaa_kernels.triton import temporal_conv as tc
    config = next(c for c in tc._gemm_configs() if (c.kwargs["BLOCK_P"], c.kwargs["BLOCK_CO"], c.kwargs["TMA"],
                                                     c.num_stages) == (128, 256, 1, 3))
    monkeypatch.setattr(tc, "_GEMM_FORCE", config)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    assert 0 < tc._tail_tiles(160, sms) < 160, "shape no longer mixes whole and half tiles on this GPU"
    x, wt, b = make_inputs(40, 64, 456, 16, 16, 3, dtype=torch.bfloat16, device="cuda", layout=layout)
    check_against_reference(x, wt, b, 8, "triton", 2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("index", [i for i, _ in _dw_configs_16()], ids=[n for _, n in _dw_configs_16()])
@pytest.mark.parametrize("case", GEMM_DW_CASES)
def test_every_dw_config_gpu(index, case, poison, monkeypatch):
    """Each bf16 weight-gradient configuration the autotuner may pick, forced."""
    from tfaa_kernels.triton import temporal_conv as tc
    monkeypatch.setattr(tc, "_DW_FORCE", tc._dw_configs()[index])
    _gemm_and_dw_cases(case)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
@pytest.mark.parametrize("view", ["channel_slice", "spatial_crop"])
def test_kernel_gpu_strided_views(backend, view, poison):
    base = torch.randn(8, 96, 10, 12, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    x = base[:, 16:80] if view == "channel_slice" else base[:, :64, 1:9, ::2]
    _, w, b = make_inputs(1, 64, 80, 1, 1, 3, dtype=torch.bfloat16, device="cuda")
    check_against_reference(x, w, b, 4, backend, 2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", FUSED_GPU_KERNELS or ["triton"])
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("num_frames,c,h,w", [(16, 320, 16, 16), (3, 64, 9, 7), (1, 128, 8, 8)])
def test_fused_gpu(backend, dtype, layout, num_frames, c, h, w, poison, no_tf32):
    x, wt, b = make_inputs(2 * num_frames, c, c, h, w, 3, dtype=dtype, device="cuda", layout=layout)
    with torch.no_grad():
        x.mul_(1.5).add_(0.5)
    norm = make_norm(c, 32, dtype=dtype, device="cuda")
    check_against_reference(x, wt, b, num_frames, backend, TOL[dtype], norm=norm, activation="silu")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", FUSED_GPU_KERNELS or ["triton"])
def test_fused_gpu_fp32_norm_params(backend):
    """Mixed precision: bf16 activations and conv weights, fp32 GroupNorm parameters."""
    x, wt, b = make_inputs(8, 64, 64, 8, 8, 3, dtype=torch.bfloat16, device="cuda")
    norm = make_norm(64, 32, dtype=torch.float32, device="cuda")
    check_against_reference(x, wt, b, 4, backend, 2e-2, norm=norm, activation="silu")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_int64_offsets_gpu(backend, layout):
    """More than 2^31 elements in x, y and dx: the last clip against the reference."""
    f, c, h, w = 2, 64, 512, 512
    n = (2 ** 31) // (c * h * w) + 2                      # > 2^31 elements
    n += n % f
    x = torch.randn(n, c, h, w, device="cuda", dtype=torch.bfloat16)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    assert x.numel() > 2 ** 31
    wt = torch.randn(c, c, 3, device="cuda", dtype=torch.bfloat16) / (3 * c) ** 0.5
    b = torch.randn(c, device="cuda", dtype=torch.bfloat16)
    last = slice(n - f, n)
    xl = x[last].double()
    y = tk.temporal_conv1d(x, wt, b, f, backend=backend)
    assert_close(y[last], reference.temporal_conv1d(xl, wt.double(), b.double(), f), 2e-2, "y")
    del y
    dy = torch.randn(n, c, h, w, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=expected_format(x))
    dx, _, _ = torch.ops.tfaa.temporal_conv1d_bwd(dy, x, wt, f, False, backend)
    xr = xl.requires_grad_(True)
    (g,) = torch.autograd.grad(reference.temporal_conv1d(xr, wt.double(), None, f), [xr], dy[last].double())
    assert_close(dx[last], g, 2e-2, "dx")
    del dx, dy
    if has_impl("temporal_conv1d_gn_silu", backend):
        y = tk.temporal_conv1d(x, wt, b, f, backend=backend, norm=GroupNormSpec(32), activation="silu")
        ref = reference.group_norm_silu_temporal_conv1d(xl.detach(), wt.double(), b.double(), f, 32)
        assert_close(y[last], ref, 2e-2, "fused y")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
@pytest.mark.parametrize("fused", [False, True])
def test_deterministic_gpu(backend, fused):
    """With deterministic algorithms on, two backward passes give bitwise-equal gradients."""
    if fused and not has_impl("temporal_conv1d_gn_silu", backend):
        pytest.skip(f"{backend} has no fused kernel")
    x, w, b = make_inputs(32, 320, 320, 32, 32, 3, dtype=torch.bfloat16, device="cuda")
    norm = make_norm(320, 32, dtype=torch.bfloat16, device="cuda") if fused else None
    leaves = [x, w, b] + ([norm.weight, norm.bias] if fused else [])
    dy = torch.randn(32, 320, 32, 32, device="cuda", dtype=torch.bfloat16)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            y = tk.temporal_conv1d(x, w, b, 16, backend=backend, norm=norm, activation="silu" if fused else None)
            runs.append(torch.autograd.grad(y, leaves, dy))
    finally:
        torch.use_deterministic_algorithms(was)
    for a, c in zip(*runs):
        assert torch.equal(a, c)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
def test_opcheck_gpu(backend):
    x, w, b = (t.detach() for t in make_inputs(6, 64, 48, 5, 7, 3, dtype=torch.bfloat16, device="cuda"))
    torch.library.opcheck(torch.ops.tfaa.temporal_conv1d_fwd.default, (x, w, b, 3, backend))
    dy = torch.randn(6, 48, 5, 7, device="cuda", dtype=torch.bfloat16)
    torch.library.opcheck(torch.ops.tfaa.temporal_conv1d_bwd.default, (dy, x, w, 3, True, backend))
    if has_impl("temporal_conv1d_gn_silu", backend):
        gw, gb = torch.randn(64, device="cuda"), torch.randn(64, device="cuda")
        torch.library.opcheck(torch.ops.tfaa.temporal_conv1d_gn_silu_fwd.default,
                              (x, w, b, gw, gb, 3, 32, 1e-5, True, backend))
        torch.library.opcheck(torch.ops.tfaa.temporal_conv1d_gn_silu_bwd.default,
                              (dy, x, w, gw, gb, 3, 32, 1e-5, True, True, backend))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_KERNELS or ["triton"])
@pytest.mark.parametrize("fused", [False, True])
def test_compile_fullgraph_gpu(backend, fused):
    if fused and not has_impl("temporal_conv1d_gn_silu", backend):
        pytest.skip(f"{backend} has no fused kernel")
    m = _TinyConvBlock(c=128, groups=32, backend=backend, fused=fused).cuda().to(torch.bfloat16)
    x = torch.randn(8, 128, 8, 8, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=CL)
    x.requires_grad_(True)
    _compile_matches_eager(m, x, 4, 2e-2)


def test_fused_reference_fp32_norm_params_bf16_input():
    """The torch path takes fp32 GroupNorm parameters with bf16 x (cast to x's dtype)."""
    x = torch.randn(4, 8, 3, 3, dtype=torch.bfloat16)
    w, b = torch.randn(5, 8, 3, dtype=torch.bfloat16), torch.randn(5, dtype=torch.bfloat16)
    gw = torch.randn(8, requires_grad=True)
    y = tk.temporal_conv1d(x, w, b, 2, backend="torch", norm=GroupNormSpec(4, gw, None), activation="silu")
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert gw.grad.dtype == torch.float32 and torch.isfinite(gw.grad).all()


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_fast_silu_fallback_cpu(backend, monkeypatch):
    """If the inline-PTX fast SiLU cannot be compiled (here: the interpreter has no inline asm), the
    kernels warn and fall back to the exact SiLU with the same result."""
    from tfaa_kernels.triton import group_norm_silu as gns  # owns the fast-SiLU switch of all kernels
    monkeypatch.setattr(gns, "_fast_silu", lambda t: True)
    monkeypatch.setattr(gns, "_FAST_SILU_FAILED", False)
    x, w, b = make_inputs(6, 16, 12, 3, 3, 3)
    with pytest.warns(UserWarning, match="fast SiLU"):
        check_against_reference(x, w, b, 3, backend, 1e-5, norm=make_norm(16, 4), activation="silu")
    assert gns._FAST_SILU_FAILED


def test_autocast_casts_inputs_like_nn_conv():
    """Under torch.autocast the op casts x/weight/bias to the autocast dtype (custom ops are opaque
    to autocast), and gradients reach the fp32 weight in fp32."""
    x = torch.randn(6, 8, 3, 3)
    w = torch.randn(8, 8, 3, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = tk.temporal_conv1d(x, w, b, 3, backend="torch")
        y_fused = tk.temporal_conv1d(x, w, b, 3, backend="torch", norm=tk.GroupNormSpec(4), activation="silu")
    assert y.dtype == torch.bfloat16 and y_fused.dtype == torch.bfloat16
    ref = reference.temporal_conv1d(x.bfloat16(), w.bfloat16(), b.bfloat16(), 3)
    assert torch.equal(y, ref)
    y.float().sum().backward()
    assert w.grad.dtype == torch.float32 and b.grad is not None


def _fake_auto_backend(available):
    """backends.auto_backend as if exactly ``available`` could run: the first of the preference."""
    return lambda op, preference, device: next((b for b in preference if b in available), "torch")


def test_auto_shape_rule_keeps_reference_for_small_frames_with_grad(monkeypatch):
    """backend="auto" with gradients on frames < 32x32 takes the reference (measured faster there);
    forward-only or large frames keep the kernel backend of AUTO_PREFERENCE."""
    from tfaa_kernels.ops import conv as conv_op
    monkeypatch.setattr(conv_op, "auto_backend", _fake_auto_backend({"torch", "triton", "cuda"}))
    small = torch.randn(4, 8, 4, 4, requires_grad=True)
    large = torch.randn(4, 8, 32, 32, requires_grad=True)
    w = torch.randn(8, 8, 3)
    assert conv_op._auto_for_shape(small, w) == "torch"
    assert conv_op._auto_for_shape(large, w) == "cuda"
    with torch.no_grad():
        assert conv_op._auto_for_shape(small, w) == "cuda"
    assert conv_op._auto_for_shape(small.detach(), w) == "cuda"
    monkeypatch.setattr(conv_op, "auto_backend", _fake_auto_backend({"torch", "triton"}))
    assert conv_op._auto_for_shape(large, w) == "triton"


def test_auto_shape_rule_under_cuda_graphs(monkeypatch):
    """Inside auto_for_cuda_graphs (GPU time decides) small frames with gradients take Triton first
    (then CUDA), not the reference; large NCHW frames keep CUDA first; outside the context the
    eager rule holds again."""
    from tfaa_kernels.ops import conv as conv_op
    monkeypatch.setattr(conv_op, "auto_backend", _fake_auto_backend({"torch", "triton", "cuda"}))
    small = torch.randn(4, 8, 16, 16, requires_grad=True)
    large = torch.randn(4, 8, 32, 32, requires_grad=True)
    w = torch.randn(8, 8, 3)
    with tk.auto_for_cuda_graphs():
        assert conv_op._auto_for_shape(small, w) == "triton"
        assert conv_op._auto_for_shape(small.contiguous(memory_format=torch.channels_last), w) == "triton"
        assert conv_op._auto_for_shape(large, w) == "cuda"
        with torch.no_grad():
            assert conv_op._auto_for_shape(small, w) == "cuda"
        monkeypatch.setattr(conv_op, "auto_backend", _fake_auto_backend({"torch", "cuda"}))
        assert conv_op._auto_for_shape(small, w) == "cuda"
    assert conv_op._auto_for_shape(small, w) == "torch"


def _real_uses_wgmma(x, w):
    from tfaa_kernels.ops import conv as conv_op
    return conv_op._cuda_conv_uses_wgmma(x, w)


def test_auto_layout_rule_prefers_triton_for_large_channels_last_frames(monkeypatch):
    """"auto" puts Triton before CUDA for channels_last frames >= 32x32 that the CUDA backend would
    run on cuBLAS (its per-tap GEMMs measured slower there), keeps "cuda" first when CUDA runs them
    as its Hopper kernel, for NCHW and for small frames, and stays on "cuda" when Triton cannot run."""
    from tfaa_kernels import backends
    from tfaa_kernels.ops import conv as conv_op
    w = torch.randn(8, 8, 3)
    large = torch.randn(4, 8, 32, 32)
    small = torch.randn(4, 8, 16, 16)
    cl = torch.channels_last
    monkeypatch.setattr(conv_op, "auto_backend", _fake_auto_backend({"torch", "triton", "cuda"}))
    assert conv_op._auto_for_shape(large.contiguous(memory_format=cl), w) == "triton"
    assert conv_op._auto_for_shape(large, w) == "cuda"
    assert conv_op._auto_for_shape(small.contiguous(memory_format=cl), w) == "cuda"
    # unless CUDA runs the call as its Hopper kernel (measured faster than Triton, S15-run 5)
    monkeypatch.setattr(conv_op, "_cuda_conv_uses_wgmma", lambda x, w: True)
    assert conv_op._auto_for_shape(large.contiguous(memory_format=cl), w) == "cuda"
    monkeypatch.setattr(conv_op, "_cuda_conv_uses_wgmma", lambda x, w: False)
    monkeypatch.setattr(conv_op, "auto_backend", _fake_auto_backend({"torch", "cuda"}))
    assert conv_op._auto_for_shape(large.contiguous(memory_format=cl), w) == "cuda"
    # the real helpers: off CUDA "auto" is always the reference, and no CPU call is a CUDA kernel's
    assert not _real_uses_wgmma(large.bfloat16().contiguous(memory_format=cl), w.bfloat16())
    assert backends.auto_backend("temporal_conv1d", ("triton", "cuda"), torch.device("cpu")) == "torch"


@pytest.mark.skipif(not (CPU_KERNELS or torch.cuda.is_available()), reason="needs Triton (GPU or interpreter)")
@pytest.mark.parametrize("taps_in_tile", [False, True])
def test_packed_weights_match_permutes(monkeypatch, taps_in_tile):
    """The Triton conv's packed weight copies equal torch's permutes (odd channel counts, K 1/3/5,
    a non-contiguous weight), with the taps moved per tap or as one tile."""
    from tfaa_kernels.triton import temporal_conv as tc
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setattr(tc, "_TAP_MAJOR_TILES", {k: (taps_in_tile,) + v[1:] for k, v in tc._TAP_MAJOR_TILES.items()})
    for c_out, c_in, kk in ((5, 7, 3), (40, 33, 5), (3, 2, 1), (70, 130, 3)):
        w = torch.randn(c_out, c_in, 2 * kk, device=dev)[..., ::2]
        assert torch.equal(tc._fwd_weight(w), w.permute(2, 1, 0))
        assert torch.equal(tc._dx_weight(w), w.flip(2).permute(2, 0, 1))


def test_auto_fused_layer_for_cuda_graphs(monkeypatch):
    """"auto" runs the GroupNorm/SiLU layer as the composite, except with gradients inside
    tk.auto_for_cuda_graphs(): there the fused Triton kernel (GPU time decides, RESULTS.md S11)."""
    from tfaa_kernels import backends
    from tfaa_kernels.ops import conv as conv_op
    cuda = torch.device("cuda")
    monkeypatch.setattr(conv_op, "resolve_backend", lambda backend, op, device: "cuda" if backend == "auto" else backend)
    monkeypatch.setattr(conv_op, "backend_runs_on", lambda backend, device: True)
    monkeypatch.setattr(conv_op, "has_impl", lambda op, backend: backend == "triton")
    assert conv_op._fused_backend("auto", cuda, training=True) == "composite"
    with tk.auto_for_cuda_graphs():
        assert backends.auto_targets_cuda_graphs()
        assert conv_op._fused_backend("auto", cuda, training=True) == "triton"
        assert conv_op._fused_backend("auto", cuda, training=False) == "composite"  # inference: composite
        assert conv_op._fused_backend("cuda", cuda, training=True) == "composite"   # explicit backends kept
        assert conv_op._fused_backend("auto", torch.device("cpu"), training=True) == "composite"
        with tk.auto_for_cuda_graphs(False):
            assert conv_op._fused_backend("auto", cuda, training=True) == "composite"
        assert conv_op._fused_backend("auto", cuda, training=True) == "triton"
        monkeypatch.setattr(conv_op, "backend_runs_on", lambda backend, device: False)
        assert conv_op._fused_backend("auto", cuda, training=True) == "composite"   # no Triton: composite
    assert not backends.auto_targets_cuda_graphs()


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_auto_for_cuda_graphs_capture_gpu(layout):
    """Inside tk.auto_for_cuda_graphs() "auto" takes the fused layer with gradients: warm-up on a side
    stream (autotuning there), capture, replay on new inputs; the replayed forward and gradients
    match the float64 reference on those inputs."""
    if "triton" not in available_backends("cuda"):
        pytest.skip("Triton not available")
    from tfaa_kernels.ops import conv as conv_op
    x, w, b = make_inputs(8, 64, 96, 12, 12, 3, dtype=torch.bfloat16, device="cuda", layout=layout)
    norm = make_norm(64, 32, dtype=torch.bfloat16, device="cuda")
    leaves = [x, w, b, norm.weight, norm.bias]
    dy = torch.randn(8, 96, 12, 12, dtype=torch.bfloat16, device="cuda")
    out = {}

    def step():
        y = tk.temporal_conv1d(x, w, b, 4, norm=norm, activation="silu")
        out["y"] = y
        out["grads"] = torch.autograd.grad(y, leaves, dy)

    with tk.auto_for_cuda_graphs():
        assert conv_op._fused_backend("auto", x.device, training=True) == "triton"
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    with torch.no_grad():
        for t in leaves + [dy]:
            t.copy_(torch.randn_like(t) * (0.2 if t.ndim == 1 else 1.0) + (1.0 if t is norm.weight else 0.0))
    graph.replay()
    torch.cuda.synchronize()
    d64 = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = reference.group_norm_silu_temporal_conv1d(d64[0], d64[1], d64[2], 4, 32, d64[3], d64[4])
    assert_close(out["y"], ref, TOL[torch.bfloat16], "replayed forward")
    for name, g, r in zip(["x", "weight", "bias", "norm.weight", "norm.bias"], out["grads"],
                          torch.autograd.grad(ref, d64, dy.double())):
        assert_close(g, r, TOL[torch.bfloat16], f"replayed d{name}")
