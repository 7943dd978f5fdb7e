"""temporal_conv1d on the "cuda" backend (csrc/temporal_conv.cu, conv_reductions.cu, conv_wgmma.cu)
against the float64 reference: NCHW and channels_last, K in {1, 3, 5}, C_in != C_out, F in
{1, 2, 3, 5, 16}, fp32/bf16/fp16, with and without bias, forward and every gradient, poisoned
outputs; the Hopper implicit-GEMM forward (TMA + wgmma) and the cuBLAS path it replaces. GPU only."""
import pytest
import torch

import tfaa_kernels as tk
from tfaa_kernels import reference
from tfaa_kernels.backends import available_backends
from helpers import TOL, TOL_TF32, assert_close

pytestmark = pytest.mark.gpu
CL = torch.channels_last
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _cuda_backend():
    if not (torch.cuda.is_available() and "cuda" in available_backends("cuda")):
        pytest.skip("the cuda backend is not available here")


def tol_for(dtype):
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return TOL_TF32
    return TOL[dtype]


def run_case(bf, num_frames, c_in, c_out, h, w, kk, dtype, layout, with_bias):
    dev = "cuda"
    x = torch.randn(bf, c_in, h, w, dtype=dtype, device=dev)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    weight = torch.randn(c_out, c_in, kk, dtype=dtype, device=dev) / (c_in * kk) ** 0.5
    bias = torch.randn(c_out, dtype=dtype, device=dev) if with_bias else None
    leaves = [t.requires_grad_(True) for t in (x, weight, bias) if t is not None]

    y = tk.temporal_conv1d(x, weight, bias, num_frames, backend="cuda")
    fmt = CL if layout == "channels_last" and not x.is_contiguous() else torch.contiguous_format
    assert y.dtype == dtype and y.is_contiguous(memory_format=fmt)

    d64 = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = reference.temporal_conv1d(d64[0], d64[1], d64[2] if with_bias else None, num_frames)
    tol = tol_for(dtype)
    what = f"{layout} K={kk} F={num_frames} {dtype}"
    assert_close(y, ref, tol, f"{what} forward")

    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, dy)
    ref_grads = torch.autograd.grad(ref, d64, dy.double())
    for name, g, r in zip(("dx", "dweight", "dbias"), grads, ref_grads):
        assert_close(g, r, tol, f"{what} {name}")
    assert grads[0].is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_frames", [1, 2, 3, 5, 16])
@pytest.mark.parametrize("kk", [1, 3, 5])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_cuda_against_reference(layout, kk, num_frames, dtype, poison):
    _cuda_backend()
    run_case(2 * num_frames, num_frames, 6, 10, 5, 7, kk, dtype, layout, with_bias=True)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_conv_cuda_no_bias_aligned(layout, dtype, poison):
    """No bias (beta = 0 GEMMs), 16-byte aligned rows (vector bias-fill path off), C_out > C_in."""
    _cuda_backend()
    run_case(3 * 4, 4, 16, 24, 8, 8, 3, dtype, layout, with_bias=False)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_cuda_sd_width(layout, poison):
    """An SD-like width (C = 320) in bf16: cuBLAS tensor-core paths, 16 frames, 2 clips."""
    _cuda_backend()
    run_case(2 * 16, 16, 320, 320, 16, 16, 3, torch.bfloat16, layout, with_bias=True)


def test_conv_cuda_weight_grad_chunked_slots(poison):
    """C = 1280: the weight-gradient workspace holds fewer slots than frames (chunked GEMM batches)."""
    _cuda_backend()
    run_case(16, 16, 1280, 1280, 2, 2, 3, torch.float32, "nchw", with_bias=True)


@pytest.mark.parametrize("case", ["bf16_3clips", "fp32_chunked_slots"])
def test_conv_cuda_channels_last_folded_frames(case, poison):
    """channels_last with wide channels: each clip's frames are one GEMM (forward: N = nf*HW; weight
    gradient: reduction nf*HW, dweight_folds: clips x 128-tiles of the output >= 128). 3 clips of
    C 1000 -> 1100 (odd widths); and 5 clips of C 1280, whose fp32 partials fit 3 slots of the
    workspace, so the clips run as chunks of 3 and 2 accumulated in place."""
    _cuda_backend()
    if case == "bf16_3clips":
        run_case(3 * 4, 4, 1000, 1100, 3, 3, 3, torch.bfloat16, "channels_last", with_bias=True)
    else:
        run_case(5 * 2, 2, 1280, 1280, 2, 2, 3, torch.float32, "channels_last", with_bias=True)


def test_conv_cuda_backward_deterministic():
    _cuda_backend()
    x = torch.randn(2 * 8, 64, 16, 16, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(48, 64, 3, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(48, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = tk.temporal_conv1d(x, w, b, 8, backend="cuda")
    dy = torch.randn_like(y)
    g1 = torch.autograd.grad(y, [x, w, b], dy, retain_graph=True)
    g2 = torch.autograd.grad(y, [x, w, b], dy)
    for a, c in zip(g1, g2):
        assert torch.equal(a, c)


def test_conv_cuda_entry_points_mixed_formats(poison):
    """The backend's bwd entry point takes dy in another memory format than x, and returns zero
    dbias when no bias gradient is needed."""
    _cuda_backend()
    from tfaa_kernels.backends import get_impl

    x = torch.randn(6, 8, 4, 4, device="cuda").contiguous(memory_format=CL)
    w = torch.randn(5, 8, 3, device="cuda")
    dy = torch.randn(6, 5, 4, 4, device="cuda")  # NCHW while x is channels_last
    dx, dw, db = get_impl("temporal_conv1d_bwd", "cuda")(dy, x, w, 3, False)
    x64, w64 = x.double().requires_grad_(True), w.double().requires_grad_(True)
    ref = reference.temporal_conv1d(x64, w64, None, 3)
    rdx, rdw = torch.autograd.grad(ref, [x64, w64], dy.double())
    assert dx.is_contiguous(memory_format=CL)
    assert_close(dx, rdx, tol_for(torch.float32), "dx")
    assert_close(dw, rdw, tol_for(torch.float32), "dweight")
    assert torch.equal(db, torch.zeros_like(db))


# ------------------------------------------------------------ the Hopper implicit-GEMM kernels
def _paths(x, weight, num_frames):
    import tfaa_kernels.cuda as tc

    return tc.build().conv_paths(x, weight, num_frames)


def _wgmma_device():
    _cuda_backend()
    x = torch.randn(2, 8, 2, 4, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(8, 8, 3, device="cuda", dtype=torch.bfloat16)
    if _paths(x.contiguous(memory_format=CL), w, 2)["forward"] != "wgmma":
        pytest.skip("the wgmma conv kernels need an sm_90 GPU and an sm_90a build")


# (clips, F, C_in, C_out, H, W, K, bias)
CL_CASES = {
    "rows_straddle_clips": (2, 5, 72, 40, 7, 9, 3, True),   # clip rows 315: tiles cross frames and clips
    "K5_eight_channels": (3, 7, 8, 16, 5, 5, 5, True),      # one 8-channel chunk of a 64-channel stage
    "cout_over_a_tile": (1, 3, 136, 168, 15, 20, 3, False),  # C_out = 160 + 8, C_in = 2 stages + 8
    "F1_centre_tap_only": (2, 1, 64, 64, 8, 8, 3, True),
    "K1": (2, 2, 24, 32, 3, 3, 1, True),
    "sd_width_16_frames": (2, 16, 320, 320, 16, 16, 3, True),
}
NCHW_CASES = {  # the weight gradient: HW % 8 == 0
    "hw24_partial_pixel_block": (2, 5, 72, 40, 4, 6, 3, True),
    "hw80_K5": (3, 7, 8, 16, 8, 10, 5, True),
    "cout_over_a_tile_split": (5, 2, 40, 264, 4, 4, 3, False),  # C_out = 256 + 8, many splits
    "F1_no_frames_for_side_taps": (2, 1, 64, 64, 8, 8, 3, True),
    "cin_over_a_tile": (1, 3, 168, 136, 8, 8, 3, False),
    "sd_width_16_frames": (2, 16, 320, 320, 16, 16, 3, True),
}
CASES = {**{f"cl-{k}": ("channels_last", v) for k, v in CL_CASES.items()},
         **{f"nchw-{k}": ("nchw", v) for k, v in NCHW_CASES.items()}}


@pytest.mark.parametrize("path", ["wgmma", "cublas"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_conv_cuda_wgmma_against_reference(case, dtype, path, monkeypatch, poison):
    """bf16/fp16 with the Hopper kernels ("wgmma": channels_last forward and input gradient, NCHW
    weight gradient), or with TFAA_CUDA_CONV_WGMMA=0 the cuBLAS GEMMs ("cublas"); both against the
    float64 reference on shapes with partial tiles, out-of-clip taps, clip ends and split
    reductions."""
    _wgmma_device()
    if path == "cublas":
        monkeypatch.setenv("TFAA_CUDA_CONV_WGMMA", "0")
    layout, (clips, f, c_in, c_out, h, w, kk, bias) = CASES[case]
    x = torch.randn(clips * f, c_in, h, w, device="cuda", dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    weight = torch.randn(c_out, c_in, kk, device="cuda", dtype=dtype)
    paths = _paths(x, weight, f)
    want = {"forward": "channels_last", "input_grad": "channels_last", "weight_grad": "nchw"}
    for gemm, where in want.items():
        assert paths[gemm] == (path if layout == where else "cublas"), (gemm, paths)
    run_case(clips * f, f, c_in, c_out, h, w, kk, dtype, layout, with_bias=bias)


def test_conv_cuda_wgmma_misaligned_input_falls_back(poison):
    """x at a 2-byte offset from 16-byte alignment: TMA cannot read it, so the forward runs the
    cuBLAS GEMMs, and is still right."""
    _wgmma_device()
    n, c, h, w, f = 4, 16, 3, 5, 2
    ref_x = torch.randn(n, c, h, w, device="cuda", dtype=torch.bfloat16)
    base = torch.empty(ref_x.numel() + 1, device="cuda", dtype=torch.bfloat16)
    base[1:].copy_(ref_x.permute(0, 2, 3, 1).reshape(-1))
    x = base[1:].view(n, h, w, c).permute(0, 3, 1, 2)
    assert x.is_contiguous(memory_format=CL) and x.data_ptr() % 16 != 0
    weight = torch.randn(24, c, 3, device="cuda", dtype=torch.bfloat16)
    assert _paths(x, weight, f)["forward"] == "cublas"
    y = tk.temporal_conv1d(x, weight, None, f, backend="cuda")
    ref = reference.temporal_conv1d(ref_x.double(), weight.double(), None, f)
    assert_close(y, ref, TOL[torch.bfloat16], "misaligned channels_last forward")


def test_conv_cuda_wgmma_path_rules():
    """Which calls take the kernels: channels_last forward/input gradient and NCHW weight gradient,
    bf16/fp16 only, channel counts multiples of 8 (channels_last), HW % 8 == 0 (NCHW)."""
    _wgmma_device()
    x = torch.randn(4, 16, 4, 4, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(24, 16, 3, device="cuda", dtype=torch.bfloat16)
    assert _paths(x.contiguous(memory_format=CL), w, 2) == {
        "forward": "wgmma", "input_grad": "wgmma", "weight_grad": "cublas"}
    assert _paths(x, w, 2) == {"forward": "cublas", "input_grad": "cublas", "weight_grad": "wgmma"}
    assert set(_paths(x.float(), w.float(), 2).values()) == {"cublas"}  # fp32
    assert set(_paths(x.float().contiguous(memory_format=CL), w.float(), 2).values()) == {"cublas"}
    assert _paths(x.contiguous(memory_format=CL), w[:20], 2)["forward"] == "cublas"  # C_out = 20
    assert _paths(x[:, :12].contiguous(memory_format=CL), w[:, :12], 2)["forward"] == "cublas"  # C_in = 12
    assert _paths(x[..., :3].contiguous(), w, 2)["weight_grad"] == "cublas"  # HW = 12
    # backend="auto" reads the same rule (it keeps channels_last >= 32x32 on CUDA only for the kernel)
    from tfaa_kernels.backends import auto_backend
    from tfaa_kernels.ops import conv as conv_op
    if auto_backend("temporal_conv1d", ("cuda",), x.device) == "cuda":
        assert conv_op._cuda_conv_uses_wgmma(x.contiguous(memory_format=CL), w)
        assert not conv_op._cuda_conv_uses_wgmma(x.float().contiguous(memory_format=CL), w.float())
