"""Temporal First-Adjacent Attention block (thesis §3.3, DESIGN.md §2)."""
from __future__ import annotations

import torch
from torch import nn

import tfaa_kernels

from .position import FramePositionEmbedding

TFAA_MODES = ("temporal", "spatial")


class TFAABlock(nn.Module):
    """``x + out_proj(attn(q_proj(z), k_proj(z), v_proj(z)))`` with ``z = LayerNorm(x) + pe(f)``.

    Input/output: ``(B*F, L, C)`` frame-major tokens (row ``b*F + f``), the layout of a
    ``BasicTransformerBlock`` in a 2D UNet. ``attn`` is :func:`tfaa_kernels.first_adjacent_attention`:
    each frame attends to its previous frame and the first frame, along the frame axis per token
    (``mode="temporal"``, default) or over all tokens of those two frames (``mode="spatial"``).

    q/k/v are one packed bias-free ``qkv`` Linear ``(C -> 3C)``; q, k, v are strided views of its
    output ``(B*F, L, 3, H, D)`` passed to the op without a copy. ``out_proj`` (with bias) is
    zero-initialised, so a fresh block is the identity. Parameters: ``4C^2 + 3C``.
    """

    def __init__(self, dim: int, num_heads: int, mode: str = "temporal", backend: str = "auto",
                 norm_eps: float = 1e-5):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if mode not in TFAA_MODES:
            raise ValueError(f"mode must be one of {TFAA_MODES}, got {mode!r}")
        self.dim, self.num_heads, self.mode, self.backend = dim, num_heads, mode, backend
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.pos_embed = FramePositionEmbedding(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``x``: ``(B*F, L, C)`` with ``F = num_frames``; returns the same shape."""
        n, seq, dim = x.shape
        if dim != self.dim:
            raise ValueError(f"x has {dim} channels, the block was built for {self.dim}")
        if num_frames < 1 or n % num_frames != 0:
            raise ValueError(f"x.shape[0] ({n}) must be a multiple of num_frames ({num_frames}) >= 1")
        z = self.norm(x)
        # pe of each row's frame (row b*F + f gets pe[f]), broadcast over tokens. Kept 3-D: with a
        # (B, F, L, C) view, inductor's channels_last layout optimisation stores the 4-D sum with the
        # frame axis innermost and transposes it back before the qkv GEMM (2.5 ms a step of the
        # SD-size UNet at 2x16 frames 512 px on an H100, S8 probes).
        z = z + self.pos_embed(num_frames, x.device, z.dtype).repeat(n // num_frames, 1)[:, None, :]
        qkv = self.qkv(z).view(n, seq, 3, self.num_heads, dim // self.num_heads)
        out = tfaa_kernels.first_adjacent_attention(
            qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], num_frames, mode=self.mode, backend=self.backend)
        return x + self.out_proj(out.reshape(n, seq, dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, backend={self.backend!r}"
