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


def check_group_norm_args(x: torch.Tensor, num_groups, weight, bias, eps, prefix: str = "",
                          channels: str = "C") -> None:
    """GroupNorm arguments against ``x`` ``(N, C, H, W)``: ``num_groups`` an int >= 1 dividing C,
    ``weight``/``bias`` None or floating ``(C,)`` on x's device, ``eps`` a finite number > 0.
    ``prefix`` names the holder in messages (``"norm."`` for a GroupNormSpec), ``channels`` the
    channel count's name (``"C_in"`` for a conv's input)."""
    import math

    c = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"{prefix}num_groups must be an int, got {type(num_groups).__name__}")
    if num_groups < 1 or c % num_groups != 0:
        raise ValueError(f"{prefix}num_groups must be >= 1 and divide {channels} = x.shape[1] = {c}, "
                         f"got {num_groups}")
    for name, t in ((prefix + "weight", weight), (prefix + "bias", bias)):
        if t is None:
            continue
        check_tensor(name, t, 1, f"({channels},)")
        if t.shape[0] != c:
            raise ValueError(f"{name} must have shape ({channels},) = ({c},) with {channels} = x.shape[1], "
                             f"got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"x and {name} must be on the same device, got {x.device} and {t.device}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"{prefix}eps must be a finite number > 0, got {eps!r}")


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
