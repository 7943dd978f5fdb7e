"""Pure-PyTorch reference ops, written with einops the way the thesis writes them.

These are the ground truth every backend is tested against, and the ``backend="torch"`` path of
the public ops (plain autograd, any device, fp64 included). They materialize exactly the
rearranged tensors the fused kernels avoid.

Layouts (DESIGN.md §1): a batch of ``B`` videos of ``F`` frames is stored frame-major as ``B*F``
images, row ``n = b*F + f``. ``prev(f) = max(f - 1, 0)``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange


def prev_frame_index(num_frames: int, device=None) -> torch.Tensor:
    """``[0, 0, 1, ..., F-2]``: frame 0 uses itself as its previous frame (never wraps)."""
    return (torch.arange(num_frames, device=device) - 1).clamp_min(0)


def first_adjacent_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_frames: int,
                             mode: str = "temporal", scale: Optional[float] = None) -> torch.Tensor:
    """Temporal First-Adjacent Attention (thesis eq. 3.11, 3.14, 3.15).

    Args:
        q, k, v: ``(B*F, L, H, D)``, L tokens per frame, H heads of dim D.
        num_frames: F.
        mode: ``"temporal"`` — per token, attention over the two keys of frames prev(f) and 0
            (the thesis' ``(b f) (h w) c -> (b h w) f c``); ``"spatial"`` — each frame's L queries
            over the 2L keys of frames prev(f) and 0 concatenated along the token axis.
        scale: softmax scale, default ``D ** -0.5``.

    Returns:
        ``(B*F, L, H, D)``, contiguous, dtype of q. Softmax runs in fp32 (fp64 for fp64 input).
    """
    d = q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    prev = prev_frame_index(num_frames, q.device)
    first = torch.zeros_like(prev)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32

    if mode == "temporal":
        # (b f) (h w) c -> (b h w) f c, with heads kept apart: one attention per (b, l, head).
        qt, kt, vt = (rearrange(t, "(b f) l h d -> b l h f d", f=num_frames) for t in (q, k, v))
        keys = torch.stack([kt[..., prev, :], kt[..., first, :]], dim=-2)   # b l h f 2 d
        vals = torch.stack([vt[..., prev, :], vt[..., first, :]], dim=-2)
        scores = torch.einsum("blhfd,blhfjd->blhfj", qt, keys) * scale
        probs = scores.softmax(dim=-1, dtype=acc).to(q.dtype)
        out = torch.einsum("blhfj,blhfjd->blhfd", probs, vals)
        return rearrange(out, "b l h f d -> (b f) l h d").contiguous()

    if mode == "spatial":
        # Sparse-causal: keys/values of frames prev(f) and 0 concatenated along the tokens.
        qs, ks, vs = (rearrange(t, "(b f) l h d -> b f h l d", f=num_frames) for t in (q, k, v))
        keys = torch.cat([ks[:, prev], ks[:, first]], dim=-2)                # b f h 2l d
        vals = torch.cat([vs[:, prev], vs[:, first]], dim=-2)
        if q.dtype == torch.float64 or q.device.type == "cpu":
            scores = torch.einsum("bfhld,bfhmd->bfhlm", qs, keys) * scale
            probs = scores.softmax(dim=-1, dtype=acc).to(q.dtype)
            out = torch.einsum("bfhlm,bfhmd->bfhld", probs, vals)
        else:  # fused SDPA on GPU (4-D inputs: 5-D ones fall back to the O(L^2)-memory math path)
            out = F.scaled_dot_product_attention(qs.flatten(0, 1), keys.flatten(0, 1),
                                                 vals.flatten(0, 1), scale=scale).unflatten(0, qs.shape[:2])
        return rearrange(out, "b f h l d -> (b f) l h d").contiguous()

    raise ValueError(f"mode must be 'temporal' or 'spatial', got {mode!r}")


def temporal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    num_frames: int) -> torch.Tensor:
    """Temporal 1D convolution over the frame axis (thesis eq. 3.10).

    Args:
        x: ``(B*F, C_in, H, W)``, NCHW or channels_last.
        weight: ``(C_out, C_in, K)``, odd K; zero padding ``K//2`` at both clip ends.
        bias: ``(C_out,)`` or None.
        num_frames: F.

    Returns:
        ``(B*F, C_out, H, W)`` in x's memory format.
    """
    bf, _, h, w = x.shape
    z = rearrange(x, "(b f) c h w -> (b h w) c f", f=num_frames)
    z = F.conv1d(z, weight, bias, padding=weight.shape[-1] // 2)
    y = rearrange(z, "(b h w) c f -> (b f) c h w", b=bf // num_frames, h=h, w=w)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return y.contiguous(memory_format=torch.channels_last)
    return y.contiguous()


def group_norm_silu(x: torch.Tensor, num_groups: Optional[int], gn_weight: Optional[torch.Tensor] = None,
                    gn_bias: Optional[torch.Tensor] = None, eps: float = 1e-5,
                    activation: Optional[str] = "silu") -> torch.Tensor:
    """The prologue of a temporal conv layer: per-frame GroupNorm (nn.GroupNorm semantics over each
    ``(C, H, W)`` image; skipped when ``num_groups`` is None) then SiLU (when ``activation="silu"``).
    ``gn_weight``/``gn_bias`` are cast to x's dtype. Shape and memory format of x are kept."""
    a = x
    if num_groups is not None:
        gw = gn_weight.to(x.dtype) if gn_weight is not None else None
        gb = gn_bias.to(x.dtype) if gn_bias is not None else None
        a = F.group_norm(a, num_groups, gw, gb, eps)
    if activation == "silu":
        a = F.silu(a)
    elif activation is not None:
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    return a


def group_norm_silu_temporal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                                    num_frames: int, num_groups: Optional[int],
                                    gn_weight: Optional[torch.Tensor] = None,
                                    gn_bias: Optional[torch.Tensor] = None, eps: float = 1e-5,
                                    activation: Optional[str] = "silu") -> torch.Tensor:
    """One layer of the temporal conv block (DESIGN.md §2): per-frame GroupNorm -> SiLU -> conv.

    Args:
        x: ``(B*F, C_in, H, W)``, NCHW or channels_last.
        weight, bias, num_frames: as in :func:`temporal_conv1d`.
        num_groups: GroupNorm groups over each frame's ``(C_in, H, W)`` image (nn.GroupNorm
            semantics), or None for no normalization.
        gn_weight, gn_bias: ``(C_in,)`` affine parameters of the GroupNorm, or None; cast to x's
            dtype (so fp32 parameters work with half-precision x; gradients flow back through the cast).
        eps: GroupNorm epsilon.
        activation: ``"silu"`` or None.

    Returns:
        ``(B*F, C_out, H, W)`` in x's memory format.
    """
    a = group_norm_silu(x, num_groups, gn_weight, gn_bias, eps, activation)
    y = temporal_conv1d(a, weight, bias, num_frames)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return y.contiguous(memory_format=torch.channels_last)
    return y.contiguous()
