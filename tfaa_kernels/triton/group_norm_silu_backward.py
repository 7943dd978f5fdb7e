"""Triton kernels of the backward of ``a = act(GroupNorm(x))`` given ``da``: dx, dgamma, dbeta.

x and da are ``(N, C, H, W)`` in any layout (NCHW, channels_last, strided views; da in any float
dtype, e.g. the fp32 input gradient of the fused conv or the autograd gradient in x's dtype). The
forward's statistics come from ``_affine`` (tfaa_kernels.triton.group_norm_silu): per (frame,
group) mean and rstd, per (frame, channel) ``scale = rstd * gamma`` and ``shift``, so that
``z = x * scale + shift`` is the normalized input and ``a = silu(z)`` (or ``a = z``). With
``dz = da * silu'(z)`` and ``xhat = (x - mean) * rstd``, a group of ``count = C/G * H*W`` elements:

    dbeta[c]  = sum_{n, p} dz               dgamma[c] = sum_{n, p} dz * xhat
    dx        = scale * dz - k1[n, g] - k2[n, g] * xhat
    k1 = rstd * sum_{c in g} gamma_c S1[n, c] / count,   k2 = rstd * sum_{c in g} gamma_c S2[n, c] / count

with ``S1[n, c] = sum_p dz``, ``S2[n, c] = sum_p dz * xhat``. Three kernels, two reads of x and da
and one write of dx (the torch composite it replaces made ~10 fp32 passes):

- ``_gn_bwd_sums_kernel``: (pixel x channel) tiles of a pixel chunk of frame n -> per-channel
  partial S1, S2 (fp32), one partial per chunk;
- ``_gn_bwd_finish_kernel``: one program per (n, g) adds the chunks' partials in a fixed order,
  stores S1, S2 (N, C) and k1, k2 (N, G); the host sums S over n (dgamma, dbeta) — no atomics, so
  the backward is bitwise repeatable;
- ``_gn_bwd_apply_kernel``: dx tile by tile in x's dtype and memory format.

Without GroupNorm (``num_groups == 0``: SiLU alone) only the apply runs, ``dx = da * silu'(x)``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._alloc import empty
from .._layout import memory_format_of
from ..backends import register_impl, triton_interpret
from ._host import cdiv, next_power_of_2
from ._layout import _pixel_offsets, _pixel_strides
from .group_norm_silu import _affine, _chunks


@triton.jit
def _dz_xhat(x, da, n, offs_c, c_mask, scale_ptr, shift_ptr, mean_ptr, rstd_ptr, C, G, CPG,
             HAS_NORM: tl.constexpr, SILU: tl.constexpr):
    """(dz, xhat, scale, grp) of a [BLOCK_P, BLOCK_C] tile of frame n (fp32): dz = da * silu'(z), z
    the normalized input; xhat = (x - mean) * rstd (x itself without GroupNorm); the channels'
    scale[n, c] and (frame, group) rows grp = n*G + c // CPG (ones / zeros without GroupNorm)."""
    z = x
    xhat = x
    sc = tl.full(offs_c.shape, 1.0, tl.float32)
    grp = n * G + offs_c // CPG
    if HAS_NORM:
        sc = tl.load(scale_ptr + n * C + offs_c, mask=c_mask, other=0.0)
        sh = tl.load(shift_ptr + n * C + offs_c, mask=c_mask, other=0.0)
        mu = tl.load(mean_ptr + grp, mask=c_mask, other=0.0)
        rs = tl.load(rstd_ptr + grp, mask=c_mask, other=0.0)
        z = x * sc[None, :] + sh[None, :]
        xhat = (x - mu[None, :]) * rs[None, :]
    dz = da
    if SILU:
        sig = tl.sigmoid(z)
        dz = da * (sig * (1.0 + z * (1.0 - sig)))
    return dz, xhat, sc, grp


@triton.jit
def _gn_bwd_sums_kernel(
    x_ptr, da_ptr, scale_ptr, shift_ptr, mean_ptr, rstd_ptr, part_ptr,
    sx_n, sx_c, sx_h, sx_w, sd_n, sd_c, sd_h, sd_w, C, G, CPG, HW, W, CHUNK, SPLIT, PLANE,
    FLAT_X: tl.constexpr, FLAT_D: tl.constexpr, SILU: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program (n, channel block, chunk s): S1 = sum dz, S2 = sum dz * xhat over the pixels
    [s*CHUNK, (s+1)*CHUNK) of frame n, stored in part[k * PLANE + (n*SPLIT + s)*C + c] (k = 0, 1)."""
    n = tl.program_id(0).to(tl.int64)
    s = tl.program_id(2)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    x_row = x_ptr + n * sx_n + offs_c.to(tl.int64)[None, :] * sx_c
    d_row = da_ptr + n * sd_n + offs_c.to(tl.int64)[None, :] * sd_c
    p_start = s * CHUNK
    p_end = tl.minimum(p_start + CHUNK, HW)
    acc1 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for p0 in range(p_start, p_end, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        m = (offs_p < p_end)[:, None] & c_mask[None, :]
        x = tl.load(x_row + _pixel_offsets(offs_p, W, sx_h, sx_w, FLAT_X)[:, None], mask=m,
                    other=0.0).to(tl.float32)
        da = tl.load(d_row + _pixel_offsets(offs_p, W, sd_h, sd_w, FLAT_D)[:, None], mask=m,
                     other=0.0).to(tl.float32)
        dz, xhat, _, _ = _dz_xhat(x, da, n, offs_c, c_mask, scale_ptr, shift_ptr, mean_ptr, rstd_ptr, C, G, CPG,
                                  True, SILU)
        acc1 += tl.where(m, dz, 0.0)
        acc2 += tl.where(m, dz * xhat, 0.0)
    idx = (n * SPLIT + s) * C + offs_c
    tl.store(part_ptr + idx, tl.sum(acc1, axis=0), mask=c_mask)
    tl.store(part_ptr + PLANE + idx, tl.sum(acc2, axis=0), mask=c_mask)


@triton.jit
def _gn_bwd_finish_kernel(
    part_ptr, gamma_ptr, rstd_ptr, sums_ptr, k_ptr, N, C, G, CPG, SPLIT, PLANE, inv_count,
    HAS_GAMMA: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program (n, g): S1, S2 of the group's channels from the SPLIT chunk partials (fixed order)
    into sums = [S1 (N, C), S2 (N, C)], and k = [k1 (N, G), k2 (N, G)]."""
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    g = pid % G
    offs_s = tl.arange(0, BLOCK_S)
    offs_c = g * CPG + tl.arange(0, BLOCK_C)
    c_mask = tl.arange(0, BLOCK_C) < CPG
    m = (offs_s < SPLIT)[:, None] & c_mask[None, :]
    idx = (n * SPLIT + offs_s.to(tl.int64))[:, None] * C + offs_c[None, :]
    s1 = tl.sum(tl.load(part_ptr + idx, mask=m, other=0.0), axis=0)
    s2 = tl.sum(tl.load(part_ptr + PLANE + idx, mask=m, other=0.0), axis=0)
    tl.store(sums_ptr + n * C + offs_c, s1, mask=c_mask)
    tl.store(sums_ptr + N * C + n * C + offs_c, s2, mask=c_mask)
    if HAS_GAMMA:
        gam = tl.load(gamma_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)
        s1 = s1 * gam
        s2 = s2 * gam
    rstd = tl.load(rstd_ptr + pid)
    tl.store(k_ptr + pid, rstd * inv_count * tl.sum(tl.where(c_mask, s1, 0.0), axis=0))
    tl.store(k_ptr + N * G + pid, rstd * inv_count * tl.sum(tl.where(c_mask, s2, 0.0), axis=0))


@triton.jit
def _gn_bwd_apply_kernel(
    x_ptr, da_ptr, dx_ptr, scale_ptr, shift_ptr, mean_ptr, rstd_ptr, k_ptr,
    sx_n, sx_c, sx_h, sx_w, sd_n, sd_c, sd_h, sd_w, so_n, so_c, so_h, so_w, N, C, G, CPG, HW, W,
    FLAT_X: tl.constexpr, FLAT_D: tl.constexpr, FLAT_O: tl.constexpr,
    HAS_NORM: tl.constexpr, SILU: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx = scale * dz - k1 - k2 * xhat (dx = dz without GroupNorm) in dx's dtype, any strides.
    Program = (pixel block, channel block, n)."""
    n = tl.program_id(2).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c_mask = offs_c < C
    m = (offs_p < HW)[:, None] & c_mask[None, :]
    c64 = offs_c.to(tl.int64)[None, :]
    x = tl.load(x_ptr + n * sx_n + _pixel_offsets(offs_p, W, sx_h, sx_w, FLAT_X)[:, None] + c64 * sx_c,
                mask=m, other=0.0).to(tl.float32)
    da = tl.load(da_ptr + n * sd_n + _pixel_offsets(offs_p, W, sd_h, sd_w, FLAT_D)[:, None] + c64 * sd_c,
                 mask=m, other=0.0).to(tl.float32)
    dz, xhat, sc, grp = _dz_xhat(x, da, n, offs_c, c_mask, scale_ptr, shift_ptr, mean_ptr, rstd_ptr, C, G, CPG,
                                 HAS_NORM, SILU)
    dx = dz
    if HAS_NORM:
        k1 = tl.load(k_ptr + grp, mask=c_mask, other=0.0)
        k2 = tl.load(k_ptr + N * G + grp, mask=c_mask, other=0.0)
        dx = sc[None, :] * dz - k1[None, :] - k2[None, :] * xhat
    tl.store(dx_ptr + n * so_n + _pixel_offsets(offs_p, W, so_h, so_w, FLAT_O)[:, None] + c64 * so_c,
             dx.to(dx_ptr.dtype.element_ty), mask=m)


# Tiles (BLOCK_P, BLOCK_C, num_warps): pixels contiguous (NCHW-like) -> long pixel rows of few
# channels; channels contiguous (channels_last) -> 64-channel rows (128-byte bf16 segments).
# The sums kernel cuts a frame's pixels into chunks (of whole tiles) when N * channel blocks
# programs would not fill the GPU (group_norm_silu._chunks, as the forward statistics do).
_TILES = {"nchw": (256, 8, 4), "channels_last": (32, 64, 4), "interp": (8, 16, 4)}


def _tile(x: torch.Tensor) -> Tuple[int, int, int]:
    if triton_interpret():
        return _TILES["interp"]
    return _TILES["channels_last" if memory_format_of(x) == torch.channels_last else "nchw"]


def _strides(t: torch.Tensor):
    s_h, s_w, flat = _pixel_strides(t)
    return (t.stride(0), t.stride(1), s_h, s_w), flat


def _one_element_groups_backward(da, x, stats, silu: bool, dx):
    """Groups of one element (C == G and 1x1 pixels): xhat = 0, so act(GroupNorm(x)) = act(beta)
    does not depend on x: dx = 0 and dgamma = 0 exactly, dbeta = sum over (n, pixel) of
    da * act'(beta). The general kernels return rounding noise times 1/sqrt(eps) for dx there
    (seen in the interpreter at a tiny test UNet's 1x1 level, C = G = 32; Session 12)."""
    scale, shift, _, _ = stats
    z = x.float() * scale[:, :, None, None] + shift[:, :, None, None]  # = beta up to rounding
    slope = torch.ones_like(z)
    if silu:
        sig = torch.sigmoid(z)
        slope = sig * (1 + z * (1 - sig))
    dx.zero_()
    c = x.shape[1]
    return dx, torch.zeros((c,), dtype=torch.float32, device=x.device), (da.float() * slope).sum(dim=(0, 2, 3))


def norm_act_backward(da: torch.Tensor, x: torch.Tensor, num_groups: int, gn_weight: Optional[torch.Tensor],
                      stats: Optional[tuple], silu: bool):
    """Backward of ``a = act(GroupNorm(x))`` (act = SiLU if ``silu``) given ``da`` (x's shape, any
    float dtype and layout). ``stats = (scale, shift, mean, rstd)`` from ``_affine(x, ...)``, or
    None when ``num_groups == 0`` (no GroupNorm). Returns ``(dx, dgamma, dbeta)``: dx in x's dtype
    and memory format, dgamma/dbeta ``(C,)`` fp32 (None without GroupNorm)."""
    n, c, h, w = x.shape
    hw = h * w
    fmt = memory_format_of(x)
    dx = empty((n, c, h, w), x.dtype, x.device, memory_format=fmt)
    if dx.numel() == 0:
        z = torch.zeros((c,), dtype=torch.float32, device=x.device)
        return dx, (z if num_groups > 0 else None), (z.clone() if num_groups > 0 else None)
    if num_groups > 0 and (c // num_groups) * hw == 1:
        return _one_element_groups_backward(da, x, stats, silu, dx)
    bp, bc, warps = _tile(x)
    sx, flat_x = _strides(x)
    sd, flat_d = _strides(da)
    so, flat_o = _strides(dx)
    has_norm = num_groups > 0
    f32 = torch.float32
    if has_norm:
        scale, shift, mean, rstd = stats
        g, cpg = num_groups, c // num_groups
        n_cb = cdiv(c, bc)
        chunk, split = _chunks(n * n_cb, hw, bp, x.device)
        plane = n * split * c
        part = empty((2 * plane,), f32, x.device)
        _gn_bwd_sums_kernel[(n, n_cb, split)](
            x, da, scale, shift, mean, rstd, part, *sx, *sd, c, g, cpg, hw, w, chunk, split, plane,
            FLAT_X=flat_x, FLAT_D=flat_d, SILU=silu, BLOCK_P=bp, BLOCK_C=bc, num_warps=warps)
        sums = empty((2, n, c), f32, x.device)
        k = empty((2 * n * g,), f32, x.device)
        gamma = gn_weight if gn_weight is not None else x  # never dereferenced when absent
        _gn_bwd_finish_kernel[(n * g,)](
            part, gamma, rstd, sums, k, n, c, g, cpg, split, plane, 1.0 / (cpg * hw),
            HAS_GAMMA=gn_weight is not None, BLOCK_S=next_power_of_2(split), BLOCK_C=next_power_of_2(cpg),
            num_warps=4)
    else:
        g = cpg = 1
        scale = shift = mean = rstd = k = x  # never dereferenced
    _gn_bwd_apply_kernel[(cdiv(hw, bp), cdiv(c, bc), n)](
        x, da, dx, scale, shift, mean, rstd, k, *sx, *sd, *so, n, c, g, cpg, hw, w,
        FLAT_X=flat_x, FLAT_D=flat_d, FLAT_O=flat_o, HAS_NORM=has_norm, SILU=silu,
        BLOCK_P=bp, BLOCK_C=bc, num_warps=warps)
    if not has_norm:
        return dx, None, None
    return dx, sums[1].sum(dim=0), sums[0].sum(dim=0)  # dgamma, dbeta: fixed-order sums over n


def group_norm_silu_bwd(da: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor],
                        bias: Optional[torch.Tensor], num_groups: int, eps: float, silu: bool):
    """(dx in x's dtype and memory format, dweight (C,) fp32, dbias (C,) fp32) of
    ``a = act(GroupNorm(x))``: the statistics recomputed (one read of x), then the backward above."""
    stats = _affine(x, num_groups, weight, bias, eps)
    return norm_act_backward(da, x, num_groups, weight, stats, silu)


register_impl("group_norm_silu_bwd", "triton", group_norm_silu_bwd)
