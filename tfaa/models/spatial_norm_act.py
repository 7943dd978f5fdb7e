"""GroupNorm+SiLU of the spatial ResNets as one op, for training with the spatial UNet frozen.

A diffusers ``ResnetBlock2D`` (``time_embedding_norm="default"``, SiLU) computes
``conv1(SiLU(norm1(x)))`` and ``conv2(SiLU(norm2(h + temb_proj(SiLU(temb)))))``. Under bf16
autocast, torch keeps for the backward of each norm+SiLU pair an fp32 copy of its input (autocast
runs GroupNorm in fp32), the fp32 GroupNorm output (SiLU's input) and the bf16 cast that the conv
saves: ~10 bytes an element. :func:`fuse_resnet_norm_act` makes each pair one
:func:`tfaa_kernels.group_norm_silu` call (:class:`GroupNormSiLU`), which under autocast runs in the
autocast dtype: with the Triton backward it keeps only its (bf16) input, with the reference (eager
``backend="auto"``) the bf16 GroupNorm output besides. The block's ``nonlinearity`` becomes an
identity, so the SiLU of the time embedding moves into its projection (:class:`SiLULinear`).
Parameters keep their names (``norm1.weight``, ``time_emb_proj.bias``, ...): state dicts do not
change. ``backend="torch"`` computes exactly what the unfused block computes (GroupNorm then SiLU,
autocast as usual), so a "torch" baseline stays diffusers' own computation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

import tfaa_kernels
from tfaa_kernels.backends import has_impl


class GroupNormModule(nn.Module):
    """Base of the modules that compute a replaced ``nn.GroupNorm`` through a chosen backend: holds
    its ``weight``/``bias`` parameters under the same names (same state_dict keys), ``num_groups``,
    ``eps`` and ``backend``. Subclasses define ``forward``."""

    def __init__(self, norm: nn.GroupNorm, backend: str):
        super().__init__()
        self.num_groups, self.num_channels, self.eps = norm.num_groups, norm.num_channels, norm.eps
        self.weight, self.bias = norm.weight, norm.bias
        self.backend = backend

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, backend={self.backend!r}"


class GroupNormSiLU(GroupNormModule):
    """``SiLU(GroupNorm(x))`` holding the replaced ``nn.GroupNorm``'s ``weight``/``bias``.

    Input/output: ``(N, C, H, W)``, any memory format (kept). ``backend="torch"``:
    ``F.silu(F.group_norm(x, ...))`` (under autocast GroupNorm in fp32); any other backend:
    :func:`tfaa_kernels.group_norm_silu` (under autocast in the autocast dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "torch":
            return F.silu(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))
        # a UNet backend without a GroupNorm kernel (e.g. "cuda") lets the op choose ("auto")
        backend = self.backend if has_impl("group_norm_silu", self.backend) else "auto"
        return tfaa_kernels.group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps,
                                            activation="silu", backend=backend)


class SiLULinear(nn.Module):
    """``F.linear(F.silu(x), weight, bias)`` holding the replaced ``nn.Linear``'s parameters:
    ``(..., in_features) -> (..., out_features)``."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.silu(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _fusable(resnet: nn.Module) -> bool:
    """A ResnetBlock2D whose two norm+nonlinearity pairs are GroupNorm then SiLU with nothing between
    (``time_embedding_norm="scale_shift"`` modulates between them: left as it is)."""
    return (isinstance(getattr(resnet, "norm1", None), nn.GroupNorm)
            and isinstance(getattr(resnet, "norm2", None), nn.GroupNorm)
            and isinstance(getattr(resnet, "nonlinearity", None), nn.SiLU)
            and getattr(resnet, "time_embedding_norm", "default") != "scale_shift")


def fuse_resnet_norm_act(unet: nn.Module, backend: str) -> int:
    """Make the norm+SiLU pairs of every fusable ``ResnetBlock2D`` of ``unet`` one
    :class:`GroupNormSiLU` of ``backend`` (see the module docstring); returns how many blocks
    changed. Idempotent: fused blocks (their nonlinearity is already an identity) are skipped."""
    count = 0
    for module in unet.modules():
        if not isinstance(module, ResnetBlock2D) or not _fusable(module):
            continue
        module.norm1 = GroupNormSiLU(module.norm1, backend)
        module.norm2 = GroupNormSiLU(module.norm2, backend)
        module.nonlinearity = nn.Identity()
        if module.time_emb_proj is not None and not module.skip_time_act:
            module.time_emb_proj = SiLULinear(module.time_emb_proj)
        count += 1
    return count


def set_norm_act_backend(unet: nn.Module, backend: str) -> None:
    """Set the backend of every :class:`GroupNormSiLU` in ``unet``."""
    for module in unet.modules():
        if isinstance(module, GroupNormSiLU):
            module.backend = backend
