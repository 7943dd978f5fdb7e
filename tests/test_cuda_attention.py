"""The "cuda" temporal attention kernels' code paths (csrc/temporal_attention.cu) against the float64
reference: 16-byte vector loads and the scalar fallback (odd strides, misaligned base pointers,
D not a multiple of the vector width), 1, 2, 4 and 8 chunks per lane (D up to 256), every F.
tests/test_attention.py runs the shared backend tests for "cuda" too. GPU only."""
import pytest
import torch

import tfaa_kernels as tk
from tfaa_kernels import reference
from tfaa_kernels.backends import available_backends
from helpers import TOL, assert_close

pytestmark = pytest.mark.gpu


def _cuda_backend():
    if not (torch.cuda.is_available() and "cuda" in available_backends("cuda")):
        pytest.skip("the cuda backend is not available here")


def check(q, k, v, num_frames, dtype, scale=None):
    leaves = [t for t in (q, k, v)]
    out = tk.first_adjacent_attention(q, k, v, num_frames, backend="cuda", scale=scale)
    assert out.is_contiguous() and out.dtype == dtype
    d64 = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = reference.first_adjacent_attention(*d64, num_frames, scale=scale)
    assert_close(out, ref, TOL[dtype], "forward")
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, dout)
    ref_grads = torch.autograd.grad(ref, d64, dout.double())
    for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert_close(g, r, TOL[dtype], name)


def leaves(shape, dtype, offset=0):
    """Independent q, k, v; with offset > 0, views starting `offset` elements into a buffer (so the
    base pointer is not 16-byte aligned and the kernels must take the scalar path)."""
    n = 1
    for s in shape:
        n *= s
    out = []
    for _ in range(3):
        buf = torch.randn(n + offset, dtype=dtype, device="cuda")
        out.append(buf[offset:].view(shape).detach().requires_grad_(True))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("d", [1, 8, 40, 64, 72, 96, 160, 256])
@pytest.mark.parametrize("num_frames", [1, 2, 3, 5])
def test_head_dims(d, num_frames, dtype, poison):
    _cuda_backend()
    q, k, v = leaves((2 * num_frames, 9, 3, d), dtype)
    check(q, k, v, num_frames, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("d", [40, 256])
def test_misaligned_base_scalar_path(d, dtype, poison):
    _cuda_backend()
    q, k, v = leaves((3 * 5, 7, 2, d), dtype, offset=1)
    check(q, k, v, 5, dtype, scale=0.2)


@pytest.mark.parametrize("pad", [0, 3])
def test_packed_qkv_views(pad, poison):
    """Views of one packed (B*F, L, 3*H*D + pad) projection: aligned strides (pad 0, vector path)
    and odd strides (pad 3, scalar path); the gradient reaches the packed leaf."""
    _cuda_backend()
    h, d, f = 8, 40, 16
    qkv = torch.randn(2 * f, 33, 3 * h * d + pad, dtype=torch.bfloat16, device="cuda", requires_grad=True)
    q, k, v = (qkv[..., i * h * d:(i + 1) * h * d].unflatten(-1, (h, d)) for i in range(3))
    out = tk.first_adjacent_attention(q, k, v, f, backend="cuda")
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref = reference.first_adjacent_attention(q64, k64, v64, f)
    assert_close(out, ref, TOL[torch.bfloat16], "forward")
    dout = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, [qkv], dout)
    rg = torch.autograd.grad(ref, [q64, k64, v64], dout.double())
    for i, name in enumerate("qkv"):
        assert_close(g[..., i * h * d:(i + 1) * h * d].unflatten(-1, (h, d)), rg[i], TOL[torch.bfloat16], f"d{name}")
    if pad:
        assert torch.equal(g[..., 3 * h * d:], torch.zeros_like(g[..., 3 * h * d:]))


def test_last_frame_grad_is_zero_and_deterministic():
    _cuda_backend()
    q, k, v = leaves((2 * 4, 17, 2, 64), torch.bfloat16)
    out = tk.first_adjacent_attention(q, k, v, 4, backend="cuda")
    dout = torch.randn_like(out)
    g1 = torch.autograd.grad(out, [q, k, v], dout, retain_graph=True)
    g2 = torch.autograd.grad(out, [q, k, v], dout)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    dk = g1[1].view(2, 4, 17, 2, 64)
    assert torch.equal(dk[:, 3], torch.zeros_like(dk[:, 3]))
