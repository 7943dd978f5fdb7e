"""Triton kernels of GroupNorm statistics and the norm + activation apply ``a = act(GroupNorm(x))``.

x is ``(N, C, H, W)``: NCHW, channels_last or any strided view. GroupNorm(G) normalizes each
``(C/G, H, W)`` slab of a frame n; it is folded into a per-(frame, channel) affine

    scale[n, c] = rstd[n, g] * gamma[c],   shift[n, c] = beta[c] - mean[n, g] * scale[n, c]

(``_affine``; fp32, also used by the temporal conv's fused GEMM prologue and its backward), and
``_norm_act`` writes ``a = act(x * scale + shift)`` once in x's dtype and memory format.

Statistics read x once, accumulating in fp32 the sums of ``d = x - x0`` and ``d^2`` with a shift
``x0`` taken from the data (the first element of the group, or of each channel), so that a large
mean does not cancel the variance (``E[x^2] - E[x]^2`` on ``100 + randn`` would lose ~4 digits):

- ``_gn_stats_flat_kernel``: the group's slab is contiguous (dense NCHW, also channel slices of
  it): flat 1-D loads over its ``C/G * H * W`` elements, one program per (frame, group) — or per
  (frame, group, chunk) when ``N*G`` programs are too few to fill the GPU, with an fp32 partial
  buffer that ``_gn_combine_kernel`` sums in a fixed order (deterministic).
- ``_gn_stats_tile_kernel``: any other layout (channels_last, strided views): (pixel x channel)
  tiles of 64-channel blocks over a pixel chunk of a frame (128-byte row segments of bf16
  channels_last x), per-channel partial sums (shift: the channel's first pixel) that ``_gn_combine_kernel`` merges
  into the group's mean and variance (Chan's formula over the channels).

The apply runs as a flat 1-D elementwise kernel (``_norm_act_flat_kernel``) when x (and so a) is
dense NCHW, the (frame, channel) row of each element being ``i // (H*W)``; other layouts, dense
channels_last included, take the strided (pixel x channel)-tile ``_norm_act_apply_kernel`` (a flat
channels_last kernel, ``c = i % C``, measured 1.5x slower: see the block sizes below). SiLU on
half-precision inputs on the GPU uses one MUFU tanh (``_silu`` FAST); if the inline PTX fails to
compile, ``_launch`` warns once and falls back to the exact SiLU (``_FAST_SILU_FAILED``).

The ``_prologue``/``_silu`` device functions and ``_act_flags``/``_launch`` are shared with the
temporal conv kernels (tfaa_kernels.triton.temporal_conv), which apply the same transform to
their x tiles. In the interpreter (``TRITON_INTERPRET=1``) small blocks from ``_INTERP`` run.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._alloc import empty
from .._layout import memory_format_of
from ..backends import register_impl, triton_interpret
from ._host import cdiv, next_power_of_2
from ._layout import _pixel_offsets, _pixel_strides


# ----------------------------------------------------------------------------- device functions
@triton.jit
def _silu(a, FAST: tl.constexpr):
    """a * sigmoid(a) in fp32. FAST (half-precision inputs on the GPU): sigmoid as
    0.5 + 0.5 * tanh(a / 2) with one MUFU tanh.approx (rel. error ~2^-11, below bf16/fp16 rounding)
    instead of exp + an IEEE division."""
    if FAST:
        th = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [a * 0.5],
                                       dtype=tl.float32, is_pure=True, pack=1)
        return a * (0.5 + 0.5 * th)
    return a * tl.sigmoid(a)


@triton.jit
def _prologue(a, scale_ptr, shift_ptr, n_src, ci, ci_mask, C,
              PROLOGUE: tl.constexpr, SILU: tl.constexpr, FAST_SILU: tl.constexpr):
    """a: [BLOCK_P, BLOCK_CI] fp32 tile of frame n_src -> act(a * scale + shift) (fp32)."""
    if PROLOGUE:
        sc = tl.load(scale_ptr + n_src * C + ci, mask=ci_mask, other=0.0)
        sh = tl.load(shift_ptr + n_src * C + ci, mask=ci_mask, other=0.0)
        a = a * sc[None, :] + sh[None, :]
    if SILU:
        a = _silu(a, FAST_SILU)
    return a


@triton.jit
def _gn_finish(pid, n, g, mean, var, gamma_ptr, beta_ptr, out_ptr, N, G, CPG, eps,
               HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, BLOCK_C: tl.constexpr):
    """Store mean, rstd of group (n, g) (program pid = n*G + g) and its channels' scale/shift in
    out = [mean (N, G), rstd (N, G), scale (N, C), shift (N, C)] (fp32, one buffer)."""
    rstd = 1.0 / tl.sqrt(var + eps)
    NG = N * G
    tl.store(out_ptr + pid, mean)
    tl.store(out_ptr + NG + pid, rstd)
    offs_c = g * CPG + tl.arange(0, BLOCK_C)
    c_mask = tl.arange(0, BLOCK_C) < CPG
    scale = tl.full((BLOCK_C,), 1.0, tl.float32) * rstd
    if HAS_GAMMA:
        scale = scale * tl.load(gamma_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    shift = -mean * scale
    if HAS_BETA:
        shift += tl.load(beta_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    scale_ptr = out_ptr + 2 * NG + n * (G * CPG)
    tl.store(scale_ptr + offs_c, scale, mask=c_mask)
    tl.store(scale_ptr + NG * CPG + offs_c, shift, mask=c_mask)


# ----------------------------------------------------------------------------- statistics
@triton.jit
def _gn_stats_flat_kernel(
    x_ptr, gamma_ptr, beta_ptr, out_ptr, part_ptr, sx_n, sx_c, N, G, CPG, TOTAL, CHUNK, PLANE, inv_count, eps,
    HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Group (n, g) whose TOTAL = CPG*H*W elements are contiguous from x[n, g*CPG, 0, 0]:
    program (n*G + g, s) sums d = x - x0 and d^2 (fp32, x0 = the slab's first element) over the
    chunk [s*CHUNK, (s+1)*CHUNK). SPLIT == 1: it finishes the group itself; else it stores the two
    sums in part[k * PLANE + (n*SPLIT + s)*G + g] (k = 0, 1) for _gn_combine_kernel."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n = (pid // G).to(tl.int64)
    g = pid % G
    base = x_ptr + n * sx_n + (g * CPG).to(tl.int64) * sx_c
    x0 = tl.load(base).to(tl.float32)
    start = s.to(tl.int64) * CHUNK
    end = tl.minimum(start + CHUNK, TOTAL)
    offs = tl.arange(0, BLOCK)
    acc1 = tl.zeros((BLOCK,), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK,), dtype=tl.float32)
    for o in range(start, end, BLOCK):
        m = offs < tl.minimum(end - o, BLOCK).to(tl.int32)
        v = tl.load(base + o + offs, mask=m, other=0.0).to(tl.float32)
        d = tl.where(m, v - x0, 0.0)
        acc1 += d
        acc2 += d * d
    s1 = tl.sum(acc1, axis=0)
    s2 = tl.sum(acc2, axis=0)
    if SPLIT == 1:
        dm = s1 * inv_count
        var = tl.maximum(s2 * inv_count - dm * dm, 0.0)
        _gn_finish(pid, n, g, x0 + dm, var, gamma_ptr, beta_ptr, out_ptr, N, G, CPG, eps, HAS_GAMMA, HAS_BETA,
                   BLOCK_C)
    else:
        idx = (n * SPLIT + s) * G + g
        tl.store(part_ptr + idx, s1)
        tl.store(part_ptr + PLANE + idx, s2)


@triton.jit
def _gn_stats_tile_kernel(
    x_ptr, part_ptr, sx_n, sx_c, sx_h, sx_w, C, HW, W, CHUNK, SPLIT, PLANE,
    FLAT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CC: tl.constexpr,
):
    """Per-channel sums of d = x - x0[c] and d^2 (fp32, x0[c] = x[n, c, pixel 0]) over the pixel
    chunk [s*CHUNK, (s+1)*CHUNK) of frame n, channels [cb*BLOCK_CC, (cb+1)*BLOCK_CC), any strides:
    program (n, cb, s) stores them in part[k * PLANE + (n*SPLIT + s)*C + c]."""
    n = tl.program_id(0).to(tl.int64)
    cb = tl.program_id(1)
    s = tl.program_id(2)
    offs_c = cb * BLOCK_CC + tl.arange(0, BLOCK_CC)
    c_mask = offs_c < C
    chan = x_ptr + n * sx_n + offs_c.to(tl.int64) * sx_c
    x0 = tl.load(chan, mask=c_mask, other=0.0).to(tl.float32)
    p_start = s * CHUNK
    p_end = tl.minimum(p_start + CHUNK, HW)
    acc1 = tl.zeros((BLOCK_P, BLOCK_CC), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_P, BLOCK_CC), dtype=tl.float32)
    for p0 in range(p_start, p_end, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        m = (offs_p < p_end)[:, None] & c_mask[None, :]
        v = tl.load(chan[None, :] + _pixel_offsets(offs_p, W, sx_h, sx_w, FLAT)[:, None], mask=m,
                    other=0.0).to(tl.float32)
        d = tl.where(m, v - x0[None, :], 0.0)
        acc1 += d
        acc2 += d * d
    idx = (n * SPLIT + s) * C + offs_c
    tl.store(part_ptr + idx, tl.sum(acc1, axis=0), mask=c_mask)
    tl.store(part_ptr + PLANE + idx, tl.sum(acc2, axis=0), mask=c_mask)


@triton.jit
def _gn_combine_kernel(
    x_ptr, part_ptr, gamma_ptr, beta_ptr, out_ptr, sx_n, sx_c, N, G, CPG, U, UPG, SPLIT, PLANE, unit_count, eps,
    HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Group (n, g) from the partial sums of its UPG units (a unit: the whole group, UPG = 1, or one
    channel, UPG = CPG; U units a frame, each of unit_count elements, shifted by x[n, first channel
    of the unit, pixel 0]) over SPLIT chunks: the chunks' sums are added (fixed order), then the
    units' means and centred sums of squares merged (Chan): M2 = sum M2_u + count_u * sum (mean_u - mean)^2."""
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    g = pid % G
    offs_s = tl.arange(0, BLOCK_S)
    offs_u = tl.arange(0, BLOCK_U)
    u_mask = offs_u < UPG
    u = g * UPG + offs_u
    m = (offs_s < SPLIT)[:, None] & u_mask[None, :]
    idx = (n * SPLIT + offs_s.to(tl.int64))[:, None] * U + u[None, :]
    s1 = tl.sum(tl.load(part_ptr + idx, mask=m, other=0.0), axis=0)
    s2 = tl.sum(tl.load(part_ptr + PLANE + idx, mask=m, other=0.0), axis=0)
    x0 = tl.load(x_ptr + n * sx_n + (u * (CPG // UPG)).to(tl.int64) * sx_c, mask=u_mask, other=0.0).to(tl.float32)
    dm = s1 / unit_count
    mean_u = x0 + dm
    m2_u = tl.maximum(s2 - s1 * dm, 0.0)
    mean = tl.sum(tl.where(u_mask, mean_u, 0.0), axis=0) / UPG
    dev = tl.where(u_mask, mean_u - mean, 0.0)
    m2 = tl.sum(tl.where(u_mask, m2_u, 0.0), axis=0) + unit_count * tl.sum(dev * dev, axis=0)
    var = m2 / (unit_count * UPG)
    _gn_finish(pid, n, g, mean, var, gamma_ptr, beta_ptr, out_ptr, N, G, CPG, eps, HAS_GAMMA, HAS_BETA, BLOCK_C)


# ----------------------------------------------------------------------------- apply
@triton.jit
def _norm_act_flat_kernel(
    x_ptr, a_ptr, scale_ptr, shift_ptr, TOTAL, HW,
    PROLOGUE: tl.constexpr, SILU: tl.constexpr, FAST_SILU: tl.constexpr, BLOCK: tl.constexpr,
):
    """a.flat[i] = act(x.flat[i] * scale.flat[i // HW] + shift.flat[i // HW]) over dense NCHW x and
    a (row n*C + c of scale/shift (N, C) = i // HW); int64 block base, int32 offsets inside it (the
    host takes this kernel only when a frame has < 2^31 - BLOCK elements)."""
    i0 = tl.program_id(0).to(tl.int64) * BLOCK
    j = tl.arange(0, BLOCK)
    m = j < tl.minimum(TOTAL - i0, BLOCK).to(tl.int32)
    v = tl.load(x_ptr + i0 + j, mask=m, other=0.0).to(tl.float32)
    if PROLOGUE:
        row = i0 // HW
        k = ((i0 - row * HW).to(tl.int32) + j) // HW
        sc = tl.load(scale_ptr + row + k, mask=m, other=0.0)
        sh = tl.load(shift_ptr + row + k, mask=m, other=0.0)
        v = v * sc + sh
    if SILU:
        v = _silu(v, FAST_SILU)
    tl.store(a_ptr + i0 + j, v.to(a_ptr.dtype.element_ty), mask=m)


@triton.jit
def _norm_act_apply_kernel(
    x_ptr, a_ptr, scale_ptr, shift_ptr, sx_n, sx_c, sx_h, sx_w, sa_n, sa_c, sa_h, sa_w, C, HW, W,
    FLAT_X: tl.constexpr, FLAT_A: tl.constexpr,
    PROLOGUE: tl.constexpr, SILU: tl.constexpr, FAST_SILU: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """a[n, c, p] = act(x[n, c, p] * scale[n, c] + shift[n, c]) in a's dtype (the GEMM operand's
    rounding, as the fused prologue does), any strides. Program = (pixel block, channel block, n)
    (pixel blocks on the grid's first axis: no 65535 limit there)."""
    n = tl.program_id(2).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c_mask = offs_c < C
    m = (offs_p < HW)[:, None] & c_mask[None, :]
    v = tl.load(x_ptr + n * sx_n + _pixel_offsets(offs_p, W, sx_h, sx_w, FLAT_X)[:, None]
                + offs_c.to(tl.int64)[None, :] * sx_c, mask=m, other=0.0).to(tl.float32)
    v = _prologue(v, scale_ptr, shift_ptr, n, offs_c, c_mask, C, PROLOGUE, SILU, FAST_SILU)
    tl.store(a_ptr + n * sa_n + _pixel_offsets(offs_p, W, sa_h, sa_w, FLAT_A)[:, None]
             + offs_c.to(tl.int64)[None, :] * sa_c, v.to(a_ptr.dtype.element_ty), mask=m)


# ----------------------------------------------------------------------------------- host side
_FAST_SILU_FAILED = False


def _fast_silu(t: torch.Tensor) -> bool:
    """Approximate (MUFU tanh) SiLU for half-precision inputs on the GPU; exact in fp32 and in the
    interpreter (TFAA_EXACT_SILU=1 forces exact everywhere)."""
    return (t.dtype in (torch.float16, torch.bfloat16) and not triton_interpret() and not _FAST_SILU_FAILED
            and os.environ.get("TFAA_EXACT_SILU", "0") != "1")


def _act_flags(x: torch.Tensor, prologue: bool, silu: bool) -> dict:
    """constexpr flags of the norm/act transform (``_prologue``)."""
    return dict(PROLOGUE=prologue, SILU=silu, TRANSFORM=prologue or silu, FAST_SILU=silu and _fast_silu(x))


def _launch(kernel, grid, args, flags) -> None:
    """Launch ``kernel``; if the inline-PTX fast SiLU fails to compile on this GPU/toolchain, warn
    once and use the exact SiLU from then on."""
    global _FAST_SILU_FAILED
    try:
        kernel[grid](*args, **flags)
    except Exception as exc:  # noqa: BLE001 - only the FAST_SILU variant is retried
        if not flags.get("FAST_SILU"):
            raise
        _FAST_SILU_FAILED = True
        warnings.warn(f"tfaa Triton kernels: fast SiLU (tanh.approx) failed ({type(exc).__name__}: {exc}); "
                      "using the exact SiLU")
        kernel[grid](*args, **dict(flags, FAST_SILU=False))


# Block sizes, measured on an H100 (bf16; GPU time from CUDA-graph replays, 2026-11-24):
# - statistics, dense NCHW: flat loop of _STATS_BLOCK elements, 4 warps (S1 (32, 320, 64x64) 35 us
#   for one 84 MB read, 28 us at the copy bandwidth; 4096/8 warps 36-40, 8192/8 49);
# - statistics, other layouts: (pixels x 64-channel) tiles of _TILE_ELEMS, 4 warps (channels_last
#   S1 ~49 us); more chunks than for NCHW (the pixel loop of a frame is long, its channel tiles few);
# - apply, dense NCHW: flat _APPLY_BLOCK elements a program, 8 warps (S1 59-63 us, the read+write
#   floor 56 us); dense channels_last: the (pixel x channel)-tile kernel, _CL_APPLY (S1 62 us; the
#   flat kernel with c = i % C measured 96 us there: its per-element scale/shift gathers).
_STATS_BLOCK, _STATS_WARPS = 2048, 4
_TILE_CC, _TILE_ELEMS, _TILE_WARPS = 64, 2048, 4
_APPLY_BLOCK, _APPLY_WARPS = 4096, 8
_CL_APPLY = (32, 64, 4)      # BLOCK_P, BLOCK_C, num_warps
_NCHW_APPLY = (256, 8, 4)    # strided NCHW-like views
# Interpreter: small blocks so that tiny test shapes cover several iterations, partial blocks and
# chunks; "SPLIT" (None: 1) forces the number of chunks.
_INTERP = {"BLOCK": 64, "BLOCK_P": 4, "BLOCK_CC": 16, "APPLY_BLOCK": 128, "SPLIT": None}
# Split a group's (flat) or frame's (tiles) statistics over several programs only while fewer than
# _SPLIT_MIN_WAVES * SMs programs would run; aim at _SPLIT_TARGET_WAVES * SMs programs, each chunk
# >= _SPLIT_MIN_ITERS loop iterations (S1, SD's shapes in NCHW: N*G = 1024 programs, no split).
_SPLIT_MIN_WAVES, _SPLIT_TARGET_WAVES, _SPLIT_MIN_ITERS = 4, 8, 2
_SMS = {}


def _num_sms(device: torch.device) -> int:
    if device not in _SMS:
        _SMS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SMS[device]


def _chunks(programs: int, work: int, granule: int, device: torch.device) -> Tuple[int, int]:
    """(CHUNK, SPLIT): ``work`` units (elements or pixels) of each of ``programs`` cut into SPLIT
    chunks of CHUNK (a multiple of ``granule``, one loop iteration) so the grid fills the GPU."""
    if triton_interpret():
        split = _INTERP["SPLIT"] or 1
    else:
        sms = _num_sms(device)
        split = 1
        if programs < _SPLIT_MIN_WAVES * sms:
            split = min(cdiv(_SPLIT_TARGET_WAVES * sms, programs),
                        max(1, work // (_SPLIT_MIN_ITERS * granule)))
    chunk = cdiv(cdiv(work, max(1, split)), granule) * granule
    chunk = max(chunk, granule)
    return chunk, cdiv(work, chunk)


def _affine(x: torch.Tensor, num_groups: int, gn_weight: Optional[torch.Tensor],
            gn_bias: Optional[torch.Tensor], eps: float):
    """GroupNorm of x (N, C, H, W) (any strides, H*W >= 1) folded into per-(frame, channel)
    scale/shift (N, C) fp32, plus mean, rstd (N, G) fp32. One read of x: the flat kernel when each
    group's slab is contiguous, else the (pixel x channel)-tile kernel; a combine kernel when a
    group's sums come in several partials."""
    n, c, h, w = x.shape
    g = num_groups
    hw = h * w
    cpg = c // g
    dev = x.device
    f32 = torch.float32
    out = empty((2 * n * (g + c),), f32, dev)  # mean, rstd (N, G), scale, shift (N, C)
    mean, rstd, scale, shift = out.split([n * g, n * g, n * c, n * c])
    mean, rstd, scale, shift = mean.view(n, g), rstd.view(n, g), scale.view(n, c), shift.view(n, c)
    gamma = gn_weight if gn_weight is not None else x  # never dereferenced when absent
    beta = gn_bias if gn_bias is not None else x
    flags = dict(HAS_GAMMA=gn_weight is not None, HAS_BETA=gn_bias is not None)
    block_c = next_power_of_2(cpg)
    interp = triton_interpret()
    s_h, s_w, flat = _pixel_strides(x)
    if flat and s_w == 1 and (cpg == 1 or x.stride(1) == hw):
        # each group's CPG*H*W elements are contiguous: flat 1-D loads
        block = _INTERP["BLOCK"] if interp else _STATS_BLOCK
        total = cpg * hw
        chunk, split = _chunks(n * g, total, block, dev)
        part = empty((2 * n * split * g,), f32, dev) if split > 1 else out
        _gn_stats_flat_kernel[(n * g, split)](
            x, gamma, beta, out, part, x.stride(0), x.stride(1), n, g, cpg, total, chunk, n * split * g,
            1.0 / total, float(eps), **flags, SPLIT=split, BLOCK=block, BLOCK_C=block_c,
            num_warps=4 if interp else _STATS_WARPS)
        if split == 1:
            return scale, shift, mean, rstd
        units, upg = g, 1
    else:
        # (pixel x channel) tiles, per-channel partial sums
        bcc = _INTERP["BLOCK_CC"] if interp else min(_TILE_CC, next_power_of_2(c))
        bp = _INTERP["BLOCK_P"] if interp else max(1, _TILE_ELEMS // bcc)
        n_cb = cdiv(c, bcc)
        chunk, split = _chunks(n * n_cb, hw, bp, dev)
        part = empty((2 * n * split * c,), f32, dev)
        _gn_stats_tile_kernel[(n, n_cb, split)](
            x, part, x.stride(0), x.stride(1), s_h, s_w, c, hw, w, chunk, split, n * split * c,
            FLAT=flat, BLOCK_P=bp, BLOCK_CC=bcc, num_warps=4 if interp else _TILE_WARPS)
        units, upg = c, cpg
    _gn_combine_kernel[(n * g,)](
        x, part, gamma, beta, out, x.stride(0), x.stride(1), n, g, cpg, units, upg, split,
        n * split * units, float(hw * cpg // upg), float(eps), **flags,
        BLOCK_S=next_power_of_2(split), BLOCK_U=next_power_of_2(upg), BLOCK_C=block_c,
        num_warps=4)
    return scale, shift, mean, rstd


def _norm_act(x: torch.Tensor, scale: Optional[torch.Tensor], shift: Optional[torch.Tensor],
              silu: bool) -> torch.Tensor:
    """act(x * scale + shift) (scale/shift (N, C) fp32 contiguous, or None: activation only)
    materialised in x's dtype and memory format."""
    n, c, h, w = x.shape
    fmt = memory_format_of(x)
    a = empty((n, c, h, w), x.dtype, x.device, memory_format=fmt)
    if a.numel() == 0:
        return a
    prologue = scale is not None
    flags = _act_flags(x, prologue, silu)
    del flags["TRANSFORM"]
    interp = triton_interpret()
    hw = h * w
    block = _INTERP["APPLY_BLOCK"] if interp else _APPLY_BLOCK
    if x.is_contiguous() and c * hw + block < 2 ** 31:  # dense NCHW (a too): flat 1-D
        _launch(_norm_act_flat_kernel, (cdiv(x.numel(), block),), (
            x, a, scale if prologue else x, shift if prologue else x, x.numel(), hw),
            dict(**flags, BLOCK=block, num_warps=4 if interp else _APPLY_WARPS))
        return a
    sx_h, sx_w, flat_x = _pixel_strides(x)
    sa_h, sa_w, flat_a = _pixel_strides(a)
    if interp:
        bp, bc, warps = 16, 16, 4
    elif fmt == torch.channels_last:
        bp, bc, warps = _CL_APPLY  # channels contiguous (dense channels_last x included)
    else:
        bp, bc, warps = _NCHW_APPLY  # pixels contiguous
    grid = (cdiv(hw, bp), cdiv(c, bc), n)
    _launch(_norm_act_apply_kernel, grid, (
        x, a, scale if prologue else x, shift if prologue else x,
        x.stride(0), x.stride(1), sx_h, sx_w, a.stride(0), a.stride(1), sa_h, sa_w, c, hw, w),
        dict(FLAT_X=flat_x, FLAT_A=flat_a, **flags, BLOCK_P=bp, BLOCK_C=bc, num_warps=warps))
    return a


def group_norm_silu_fwd(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                        num_groups: int, eps: float, silu: bool) -> torch.Tensor:
    """act(GroupNorm(x)) in x's dtype and memory format: statistics (one read of x), then the apply
    (one read, one write)."""
    scale, shift, _, _ = _affine(x, num_groups, weight, bias, eps)
    return _norm_act(x, scale, shift, silu)


register_impl("group_norm_silu_fwd", "triton", group_norm_silu_fwd)
