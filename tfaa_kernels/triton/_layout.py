"""Layout helpers shared by the Triton kernels on ``(N, C, H, W)`` tensors (NCHW, channels_last or
any strided view): a pixel's offset inside a frame and the host-side stride analysis (the memory
format outputs take: tfaa_kernels._layout)."""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl


@triton.jit
def _pixel_offsets(p, W, s_h, s_w, FLAT: tl.constexpr):
    """int64 offset of pixel ``p = h*W + w`` inside a frame; FLAT: (H, W) merge into one stride s_w."""
    p = p.to(tl.int64)
    if FLAT:
        return p * s_w
    return (p // W) * s_h + (p % W) * s_w


def _pixel_strides(t: torch.Tensor) -> Tuple[int, int, bool]:
    """(s_h, s_w, flat) of a (N, C, H, W) tensor; flat when pixel p = h*W + w has offset p*s_w."""
    _, _, h, w = t.shape
    s_h, s_w = t.stride(2), t.stride(3)
    if w == 1:
        return s_h, s_h, True
    if h == 1 or s_h == w * s_w:
        return s_h, s_w, True
    return s_h, s_w, False
