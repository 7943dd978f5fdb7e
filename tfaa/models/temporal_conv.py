"""Temporal convolution block: GroupNorm -> SiLU -> temporal 1D conv layers with a residual."""
from __future__ import annotations

import math

import torch
from torch import nn

import tfaa_kernels
from tfaa_kernels import GroupNormSpec


class TemporalConv1d(nn.Module):
    """Holds an ``nn.Conv1d``-layout ``weight (C_out, C_in, K)`` and ``bias (C_out,)`` for
    :func:`tfaa_kernels.temporal_conv1d`, initialised like ``nn.Conv1d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(in_channels * kernel_size)
        nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        c_out, c_in, k = self.weight.shape
        return f"{c_in}, {c_out}, kernel_size={k}"


class TemporalConvBlock(nn.Module):
    """``x + L_n(...L_1(x))``, ``L_i(h) = temporal_conv1d(SiLU(GroupNorm(h)))`` over the frame axis.

    Input/output: ``(B*F, C, H, W)`` frame-major (row ``b*F + f``), NCHW or channels_last, the
    layout of a ResNet block's output in a 2D UNet. GroupNorm normalises each frame on its own.
    The last conv is zero-initialised, so a fresh block is the identity (ModelScope's
    TemporalConvLayer structure with a true 1D conv). Parameters: ``num_layers * (3C^2 + 3C)`` at K=3.
    """

    def __init__(self, channels: int, num_layers: int = 4, kernel_size: int = 3,
                 norm_num_groups: int = 32, norm_eps: float = 1e-5, backend: str = "auto"):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if channels % norm_num_groups != 0:
            raise ValueError(f"channels ({channels}) must be divisible by norm_num_groups ({norm_num_groups})")
        self.channels, self.backend = channels, backend
        self.norms = nn.ModuleList(nn.GroupNorm(norm_num_groups, channels, eps=norm_eps)
                                   for _ in range(num_layers))
        self.convs = nn.ModuleList(TemporalConv1d(channels, channels, kernel_size) for _ in range(num_layers))
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def norm_act_conv(self, h: torch.Tensor, i: int, num_frames: int) -> torch.Tensor:
        """Layer ``i``: GroupNorm -> SiLU -> temporal conv through tfaa_kernels' layer op
        (``temporal_conv1d(..., norm=GroupNormSpec, activation="silu")``), which picks the fused
        kernel or GroupNorm+SiLU followed by the conv kernel per backend (see its docstring)."""
        norm, conv = self.norms[i], self.convs[i]
        return tfaa_kernels.temporal_conv1d(h, conv.weight, conv.bias, num_frames, backend=self.backend,
                                            norm=GroupNormSpec.from_module(norm), activation="silu")

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``x``: ``(B*F, C, H, W)`` with ``F = num_frames``; returns the same shape and memory format."""
        if num_frames < 1 or x.shape[0] % num_frames != 0:
            raise ValueError(f"x.shape[0] ({x.shape[0]}) must be a multiple of num_frames ({num_frames}) >= 1")
        h = x
        for i in range(len(self.convs)):
            h = self.norm_act_conv(h, i, num_frames)
        return x + h

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_layers={len(self.convs)}, backend={self.backend!r}"
