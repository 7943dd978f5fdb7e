"""Shared test utilities: error metric, tolerances (DESIGN.md §4) and input builders."""
from __future__ import annotations

import torch

# relative Frobenius error against a float64 computation
TOL = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 2e-2, torch.float64: 1e-10}
TOL_TF32 = 5e-4


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||; where ref is all zeros, the absolute norm of out (NaN never passes)."""
    out, ref = out.double(), ref.double()
    diff = (out - ref).norm().item()
    den = ref.norm().item()
    err = diff / den if den > 0 else diff
    return float("inf") if err != err else err


def assert_close(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "") -> None:
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert not torch.isnan(out).any(), f"{what}: NaN in output (an element was not written?)"
    err = rel_err(out, ref)
    assert err < tol, f"{what}: relative error {err:.3e} >= {tol:.1e}"


def packed_qkv(bf: int, l: int, h: int, d: int, dtype=torch.float32, device="cpu", pad: int = 3):
    """q, k, v as strided views of one packed (B*F, L, 3*H*D + pad) projection, plus the leaf."""
    qkv = torch.randn(bf, l, 3 * h * d + pad, dtype=dtype, device=device)
    qkv.requires_grad_(True)
    q, k, v = (qkv[..., i * h * d:(i + 1) * h * d].unflatten(-1, (h, d)) for i in range(3))
    return q, k, v, qkv


def leaf_qkv(bf: int, l: int, h: int, d: int, dtype=torch.float32, device="cpu"):
    return [torch.randn(bf, l, h, d, dtype=dtype, device=device, requires_grad=True) for _ in range(3)]
