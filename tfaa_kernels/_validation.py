"""Input checks shared by every public op: each raises a ValueError/TypeError naming the argument
and the rule it broke, before any kernel sees the tensors."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The reference (backend="torch") also runs fp64, for gradcheck.
REFERENCE_DTYPES = SUPPORTED_DTYPES + (torch.float64,)


def check_tensor(name: str, t, ndim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims {layout}, got shape {tuple(t.shape)}")


def check_same(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
    """All tensors share dtype and device."""
    t0 = tensors[0]
    for n, t in zip(names[1:], tensors[1:]):
        if t.dtype != t0.dtype:
            raise TypeError(f"{names[0]} and {n} must have the same dtype, got {t0.dtype} and {t.dtype}")
        if t.device != t0.device:
            raise ValueError(f"{names[0]} and {n} must be on the same device, got {t0.device} and {t.device}")


def check_dtype(name: str, t: torch.Tensor, backend: str) -> None:
    allowed = REFERENCE_DTYPES if backend == "torch" else SUPPORTED_DTYPES
    if t.dtype not in allowed:
        raise TypeError(f"{name} has dtype {t.dtype}; backend {backend!r} supports {[str(d) for d in allowed]}")


def check_num_frames(num_frames, batch_frames: int, name: str = "num_frames") -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int):
        if isinstance(num_frames, torch.SymInt):  # under torch.compile with dynamic shapes
            return num_frames
        raise TypeError(f"{name} must be an int, got {type(num_frames).__name__}")
    if num_frames < 1:
        raise ValueError(f"{name} must be >= 1, got {num_frames}")
    if batch_frames % num_frames != 0:
        raise ValueError(
            f"the leading dim (B*F = {batch_frames}) must be divisible by {name} = {num_frames}")
    return num_frames


def check_last_stride(name: str, t: torch.Tensor) -> None:
    if t.numel() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(
            f"{name} must have stride(-1) == 1 (contiguous head dim), got stride {t.stride()}; "
            f"call {name}.contiguous() first")


def check_attention_inputs(q, k, v, num_frames: int, mode: str, scale: Optional[float]) -> None:
    """Shape/dtype/device/stride rules of first_adjacent_attention (DESIGN.md §1a)."""
    for n, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(n, t, 4, "(B*F, L, H, D)")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"q, k and v must have the same shape (B*F, L, H, D), got {tuple(q.shape)}, "
            f"{tuple(k.shape)} and {tuple(v.shape)}")
    check_same(("q", "k", "v"), (q, k, v))
    if mode not in ("temporal", "spatial"):
        raise ValueError(f"mode must be 'temporal' or 'spatial', got {mode!r}")
    check_num_frames(num_frames, q.shape[0])
    for n, t in (("q", q), ("k", k), ("v", v)):
        check_last_stride(n, t)
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
        if not scale > 0 or scale != scale or scale == float("inf"):
            raise ValueError(f"scale must be a finite number > 0, got {scale}")
