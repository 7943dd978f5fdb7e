"""Sinusoidal frame position embedding, computed for any number of frames (no fixed table)."""
from __future__ import annotations

import math

import torch
from torch import nn


class FramePositionEmbedding(nn.Module):
    """``pe(f)``: the Transformer sinusoidal encoding of the 0-based frame index ``f``.

    ``pe[f, 2i] = sin(f / base^(2i/C))``, ``pe[f, 2i+1] = cos(f / base^(2i/C))`` (for odd ``C`` the
    last channel is a sine). No parameters and no table: any ``num_frames`` works.
    """

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.base = base

    def forward(self, num_frames: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """Returns ``(num_frames, dim)`` in ``dtype`` on ``device`` (computed in fp32)."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        pos = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None]
        i = torch.arange(0, self.dim, 2, device=device, dtype=torch.float32)
        freq = torch.exp(-math.log(self.base) * i / self.dim)
        angles = pos * freq  # (F, ceil(C/2))
        pe = torch.empty(num_frames, self.dim, device=device, dtype=torch.float32)
        pe[:, 0::2] = torch.sin(angles)
        pe[:, 1::2] = torch.cos(angles[:, : self.dim // 2])
        return pe.to(dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}"
