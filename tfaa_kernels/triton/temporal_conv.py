"""Triton kernels of the temporal 1D conv (DESIGN.md §1b) and its fused GroupNorm+SiLU prologue.

Layout: ``x`` is ``(B*F, C, H, W)``, NCHW or channels_last (or any strided view), read through
its four strides; a frame ``n`` is a ``(C, H*W)`` matrix. The conv is an implicit GEMM per frame:

    y_f[p, :] = bias + sum_t  x_{f+t-K//2}[p, :] @ Wp[t]          Wp = weight.permute(2, 1, 0)

M runs over the pixels ``p`` of one frame, N over output channels, and the reduction over
(tap, input channel) in one flat loop whose bounds skip the taps that fall outside the clip (they
are never read, there is no padded copy). Nothing is rearranged and no per-tap partial output is
written: y is stored once, in x's memory format.

- ``_conv_gemm_kernel`` computes the forward, and with the transposed, tap-flipped weight
  ``weight.flip(2).permute(2, 0, 1)`` the input gradient (dx_g = sum_s dy_{g+s-K//2} @ W'[s]).
  An optional prologue applies ``a = act(x * scale[n, c] + shift[n, c])`` while the x tile is
  loaded (GroupNorm folded into a per-(frame, channel) affine, then SiLU).
- ``_conv_dw_kernel`` computes the weight gradient ``dW[:, :, t] = sum_{n, p} dy_n[:, p] a_{n+t-K//2}[:, p]^T``
  as split-K partials over B*F*H*W (fp32, written once each) that the host sums in a fixed order:
  deterministic always, so also when ``torch.are_deterministic_algorithms_enabled()``.
- ``_gn_stats_kernel`` computes per (frame, group) mean and 1/std (two passes, fp32) for the
  fused prologue.

All offsets are int64. On the GPU block shapes are autotuned over the dtype's tiles (see
``_gemm_configs``; ``TFAA_AUTOTUNE=0`` takes the first that fits, as tfaa_kernels.triton._autotune
describes); in the interpreter (``TRITON_INTERPRET=1``) one small configuration runs.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._alloc import empty
from ..backends import register_impl, triton_interpret
from ._autotune import tunable

_GEMM_KEY = ["C_RED", "C_OUT", "HW", "FLAT_X", "FLAT_Y", "PROLOGUE", "SILU", "DTYPE_KEY"]
_DW_KEY = ["C_IN", "C_OUT", "HW", "FLAT_DY", "FLAT_X", "PROLOGUE", "SILU", "DTYPE_KEY"]


def _gemm_configs():
    """(BLOCK_P, BLOCK_CO, BLOCK_CI, num_warps, num_stages) tried on the GPU: tensor-core tiles
    (BLOCK_CI = 64) for 16-bit inputs, the first one being the default when TFAA_AUTOTUNE=0; small
    tiles (BLOCK_CI = 32) for fp32, whose exact ("ieee") dots run on CUDA cores."""
    shapes = [(128, 128, 64, 8, 3), (128, 128, 64, 4, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
              (256, 64, 64, 8, 3), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (64, 256, 64, 8, 3),
              (64, 64, 64, 4, 3), (64, 64, 32, 4, 2), (32, 64, 32, 4, 2), (64, 32, 32, 4, 2)]
    return [triton.Config({"BLOCK_P": bp, "BLOCK_CO": bco, "BLOCK_CI": bci}, num_warps=w, num_stages=s)
            for bp, bco, bci, w, s in shapes]


def _arg(named_args, kwargs, name):
    return kwargs.get(name, named_args.get(name))


def _gemm_prune(configs, named_args, **kwargs):
    """The dtype's tiles (see _gemm_configs), none much larger than the problem."""
    fp32 = _arg(named_args, kwargs, "DTYPE_KEY") == 0
    keep = [c for c in configs if (c.kwargs["BLOCK_CI"] == 32) == fp32]
    co_cap = max(64, triton.next_power_of_2(int(_arg(named_args, kwargs, "C_OUT"))))
    p_cap = max(64, triton.next_power_of_2(int(_arg(named_args, kwargs, "HW"))))
    fit = [c for c in keep if c.kwargs["BLOCK_CO"] <= co_cap and c.kwargs["BLOCK_P"] <= p_cap]
    return fit or keep[:1] or configs[:1]


def _dw_configs():
    """(BLOCK_P, num_warps, num_stages); BLOCK_CO/BLOCK_CI are fixed by the host (they set the split).
    The 32-pixel tile is the fp32 one."""
    return [triton.Config({"BLOCK_P": bp}, num_warps=w, num_stages=s)
            for bp, w, s in ((64, 8, 3), (128, 8, 3), (32, 4, 4))]


def _dw_prune(configs, named_args, **kwargs):
    fp32 = _arg(named_args, kwargs, "DTYPE_KEY") == 0
    keep = [c for c in configs if (c.kwargs["BLOCK_P"] == 32) == fp32]
    return keep or configs[:1]


@triton.jit
def _pixel_offsets(p, W, s_h, s_w, FLAT: tl.constexpr):
    """int64 offset of pixel ``p = h*W + w`` inside a frame; FLAT: (H, W) merge into one stride s_w."""
    p = p.to(tl.int64)
    if FLAT:
        return p * s_w
    return (p // W) * s_h + (p % W) * s_w


@triton.jit
def _silu(a, FAST: tl.constexpr):
    """a * sigmoid(a) in fp32. FAST (half-precision GEMM inputs on the GPU): sigmoid as
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


@tunable(_gemm_configs(), key=_GEMM_KEY, prune=_gemm_prune)
@triton.jit
def _conv_gemm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, scale_ptr, shift_ptr,
    sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w, sw_t, sw_r, sw_o,
    C_RED, C_OUT, HW, W, F, KT,
    FLAT_X: tl.constexpr, FLAT_Y: tl.constexpr, HAS_BIAS: tl.constexpr,
    PROLOGUE: tl.constexpr, SILU: tl.constexpr, TRANSFORM: tl.constexpr, FAST_SILU: tl.constexpr,
    IEEE: tl.constexpr, DTYPE_KEY: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    """y[n, co, p] = bias[co] + sum_{t, ci} w[t, ci, co] * act(x[n + t - KT//2, ci, p]) for the
    in-clip taps. w is a packed (KT, C_RED, C_OUT) view with strides (sw_t, sw_r, sw_o).
    Program = (frame n, pixel block, output-channel block), channel blocks fastest so programs
    that share an x tile run together."""
    pid = tl.program_id(0)
    n_co = tl.cdiv(C_OUT, BLOCK_CO)
    n_pb = tl.cdiv(HW, BLOCK_P)
    co_blk = pid % n_co
    rest = pid // n_co
    p_blk = rest % n_pb
    n = (rest // n_pb).to(tl.int64)
    f = (n % F).to(tl.int32)
    pad = KT // 2

    offs_p = p_blk * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_co = co_blk * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_ci = tl.arange(0, BLOCK_CI)
    p_mask = offs_p < HW
    co_mask = offs_co < C_OUT
    # int64 tile offsets for (tap 0 frame n, channel block 0); the loop adds a scalar per step
    x_tile = (_pixel_offsets(offs_p, W, sx_h, sx_w, FLAT_X)[:, None]
              + offs_ci.to(tl.int64)[None, :] * sx_c)
    w_tile = offs_ci.to(tl.int64)[:, None] * sw_r + offs_co.to(tl.int64)[None, :] * sw_o
    x_frame = x_ptr + n * sx_n

    # taps whose source frame f + t - pad lies in [0, F)
    t_lo = tl.maximum(pad - f, 0)
    t_hi = tl.minimum(KT, F + pad - f)
    n_ci = tl.cdiv(C_RED, BLOCK_CI)
    acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
    for it in range(t_lo * n_ci, t_hi * n_ci):
        t = it // n_ci
        ci0 = (it - t * n_ci) * BLOCK_CI
        ci_mask = offs_ci < C_RED - ci0
        dt = (t - pad).to(tl.int64)
        a = tl.load(x_frame + (dt * sx_n + ci0.to(tl.int64) * sx_c) + x_tile,
                    mask=p_mask[:, None] & ci_mask[None, :], other=0.0)
        if TRANSFORM:  # PROLOGUE or SILU
            a = _prologue(a.to(tl.float32), scale_ptr, shift_ptr, n + dt, ci0 + offs_ci, ci_mask, C_RED,
                          PROLOGUE, SILU, FAST_SILU).to(w_ptr.dtype.element_ty)
        wt = tl.load(w_ptr + (t.to(tl.int64) * sw_t + ci0.to(tl.int64) * sw_r) + w_tile,
                     mask=ci_mask[:, None] & co_mask[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(a, wt, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, wt, acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_co, mask=co_mask, other=0.0).to(tl.float32)[None, :]
    y_pix = _pixel_offsets(offs_p, W, sy_h, sy_w, FLAT_Y)
    tl.store(y_ptr + n * sy_n + y_pix[:, None] + offs_co.to(tl.int64)[None, :] * sy_c,
             acc.to(y_ptr.dtype.element_ty), mask=p_mask[:, None] & co_mask[None, :])


@tunable(_dw_configs(), key=_DW_KEY, prune=_dw_prune)
@triton.jit
def _conv_dw_kernel(
    dy_ptr, x_ptr, scale_ptr, shift_ptr, part_ptr,
    sd_n, sd_c, sd_h, sd_w, sx_n, sx_c, sx_h, sx_w, sp_s, sp_o, sp_i, sp_t,
    C_IN, C_OUT, HW, W, F, KT, N_CLIPS, SPLIT,
    FLAT_DY: tl.constexpr, FLAT_X: tl.constexpr,
    PROLOGUE: tl.constexpr, SILU: tl.constexpr, TRANSFORM: tl.constexpr, FAST_SILU: tl.constexpr,
    IEEE: tl.constexpr, DTYPE_KEY: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    """part[s, co, ci, t] = sum over split s of the (frame, pixel block) items of tap t:
    dy[n, co, p] * act(x[n + t - KT//2, ci, p]). Only frames whose source is in the clip are
    enumerated. Grid: (channel tiles, taps, splits)."""
    pid = tl.program_id(0)
    t = tl.program_id(1)
    s = tl.program_id(2)
    n_ci = tl.cdiv(C_IN, BLOCK_CI)
    co_blk = pid // n_ci
    ci_blk = pid % n_ci
    pad = KT // 2
    f_lo = tl.maximum(pad - t, 0)
    f_hi = tl.minimum(F, F + pad - t)
    n_valid = tl.maximum(f_hi - f_lo, 0)
    n_pb = tl.cdiv(HW, BLOCK_P)
    total = N_CLIPS * n_valid * n_pb
    per_split = tl.cdiv(N_CLIPS * F * n_pb, SPLIT)  # same split boundaries for every tap
    start = s * per_split
    end = tl.minimum(total, start + per_split)

    offs_co = co_blk * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_ci = ci_blk * BLOCK_CI + tl.arange(0, BLOCK_CI)
    co_mask = offs_co < C_OUT
    ci_mask = offs_ci < C_IN
    offs_pb = tl.arange(0, BLOCK_P)
    # int64 tile offsets of pixel block 0 (used as is when the pixels have one flat stride)
    d_tile = (offs_co.to(tl.int64)[:, None] * sd_c
              + _pixel_offsets(offs_pb, W, sd_h, sd_w, FLAT_DY)[None, :])
    x_tile = (_pixel_offsets(offs_pb, W, sx_h, sx_w, FLAT_X)[:, None]
              + offs_ci.to(tl.int64)[None, :] * sx_c)
    acc = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
    for i in range(start, end):
        pb = i % n_pb
        j = i // n_pb
        n = (j // n_valid).to(tl.int64) * F + f_lo + j % n_valid
        n_src = n + (t - pad)
        p0 = pb * BLOCK_P
        p_mask = offs_pb < HW - p0
        if FLAT_DY:
            d_ptrs = dy_ptr + (n * sd_n + p0.to(tl.int64) * sd_w) + d_tile
        else:
            d_ptrs = (dy_ptr + n * sd_n + offs_co.to(tl.int64)[:, None] * sd_c
                      + _pixel_offsets(p0 + offs_pb, W, sd_h, sd_w, False)[None, :])
        if FLAT_X:
            x_ptrs = x_ptr + (n_src * sx_n + p0.to(tl.int64) * sx_w) + x_tile
        else:
            x_ptrs = (x_ptr + n_src * sx_n + _pixel_offsets(p0 + offs_pb, W, sx_h, sx_w, False)[:, None]
                      + offs_ci.to(tl.int64)[None, :] * sx_c)
        dy = tl.load(d_ptrs, mask=co_mask[:, None] & p_mask[None, :], other=0.0)
        a = tl.load(x_ptrs, mask=p_mask[:, None] & ci_mask[None, :], other=0.0)
        if TRANSFORM:  # PROLOGUE or SILU
            a = _prologue(a.to(tl.float32), scale_ptr, shift_ptr, n_src, offs_ci, ci_mask, C_IN,
                          PROLOGUE, SILU, FAST_SILU)
            a = tl.where(p_mask[:, None], a, 0.0).to(dy_ptr.dtype.element_ty)
        if IEEE:
            acc = tl.dot(dy, a, acc, input_precision="ieee")
        else:
            acc = tl.dot(dy, a, acc)
    out = (part_ptr + s.to(tl.int64) * sp_s + offs_co.to(tl.int64)[:, None] * sp_o
           + offs_ci.to(tl.int64)[None, :] * sp_i + t * sp_t)
    tl.store(out, acc, mask=co_mask[:, None] & ci_mask[None, :])


@triton.jit
def _gn_stats_kernel(
    x_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, scale_ptr, shift_ptr, sx_n, sx_c, sx_h, sx_w,
    HW, W, G, CPG, inv_count, eps,
    HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr,
    FLAT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """mean, rstd of x[n, g*CPG:(g+1)*CPG, :, :] in fp32 (two passes), and the GroupNorm folded
    into scale[n, c] = rstd * gamma[c], shift[n, c] = beta[c] - mean * scale[n, c] (each (N, C)
    contiguous); program = (n, g)."""
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    g = pid % G
    offs_c = g * CPG + tl.arange(0, BLOCK_C)
    c_mask = tl.arange(0, BLOCK_C) < CPG
    base = x_ptr + n * sx_n + offs_c.to(tl.int64)[None, :] * sx_c
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for p0 in range(0, HW, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        m = (offs_p < HW)[:, None] & c_mask[None, :]
        acc += tl.load(base + _pixel_offsets(offs_p, W, sx_h, sx_w, FLAT)[:, None], mask=m,
                       other=0.0).to(tl.float32)
    mean = tl.sum(tl.sum(acc, axis=1), axis=0) * inv_count
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for p0 in range(0, HW, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        m = (offs_p < HW)[:, None] & c_mask[None, :]
        v = tl.load(base + _pixel_offsets(offs_p, W, sx_h, sx_w, FLAT)[:, None], mask=m,
                    other=0.0).to(tl.float32)
        d = tl.where(m, v - mean, 0.0)
        acc += d * d
    var = tl.sum(tl.sum(acc, axis=1), axis=0) * inv_count
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(mean_ptr + pid, mean)
    tl.store(rstd_ptr + pid, rstd)
    scale = tl.full((BLOCK_C,), 1.0, tl.float32) * rstd
    if HAS_GAMMA:
        scale = scale * tl.load(gamma_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    shift = -mean * scale
    if HAS_BETA:
        shift += tl.load(beta_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    c_total = G * CPG
    tl.store(scale_ptr + n * c_total + offs_c, scale, mask=c_mask)
    tl.store(shift_ptr + n * c_total + offs_c, shift, mask=c_mask)


# ----------------------------------------------------------------------------------- host side
_INTERP_GEMM = {"BLOCK_P": 16, "BLOCK_CO": 16, "BLOCK_CI": 16}


def _dtype_key(t: torch.Tensor) -> int:
    return {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[t.dtype]


_FAST_SILU_FAILED = False


def _fast_silu(t: torch.Tensor) -> bool:
    """Approximate (MUFU tanh) SiLU for half-precision inputs on the GPU; exact in fp32 and in the
    interpreter (TFAA_EXACT_SILU=1 forces exact everywhere)."""
    return (t.dtype in (torch.float16, torch.bfloat16) and not triton_interpret() and not _FAST_SILU_FAILED
            and os.environ.get("TFAA_EXACT_SILU", "0") != "1")


def _act_flags(x: torch.Tensor, prologue: bool, silu: bool) -> dict:
    """constexpr flags of the x-tile prologue."""
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
        warnings.warn(f"tfaa temporal_conv1d: fast SiLU (tanh.approx) failed ({type(exc).__name__}: {exc}); "
                      "using the exact SiLU")
        kernel[grid](*args, **dict(flags, FAST_SILU=False))


def _ieee(t: torch.Tensor) -> bool:
    """fp32 dots are exact (IEEE) unless torch allows TF32 matmuls."""
    return t.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is laid out that way (and not also plain contiguous), else NCHW."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _pixel_strides(t: torch.Tensor) -> Tuple[int, int, bool]:
    """(s_h, s_w, flat) of a (N, C, H, W) tensor; flat when pixel p = h*W + w has offset p*s_w."""
    _, _, h, w = t.shape
    s_h, s_w = t.stride(2), t.stride(3)
    if w == 1:
        return s_h, s_h, True
    if h == 1 or s_h == w * s_w:
        return s_h, s_w, True
    return s_h, s_w, False


def _gemm(x: torch.Tensor, wpack: torch.Tensor, bias: Optional[torch.Tensor], num_frames: int,
          out_format: torch.memory_format, scale: Optional[torch.Tensor] = None,
          shift: Optional[torch.Tensor] = None, silu: bool = False,
          out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The implicit GEMM: ``y[n] = bias + sum_t act(x[n + t - K//2]) @ wpack[t]`` (in-clip taps).

    x: (N, C_red, H, W) any strides; wpack: (K, C_red, C_out) any strides; scale/shift: (N, C_red)
    fp32 contiguous or None. Returns (N, C_out, H, W) in ``out_format``, ``out_dtype`` (default x's).
    """
    n, c_red, h, w = x.shape
    kt, _, c_out = wpack.shape
    y = empty((n, c_out, h, w), out_dtype or x.dtype, x.device, memory_format=out_format)
    sx_h, sx_w, flat_x = _pixel_strides(x)
    sy_h, sy_w, flat_y = _pixel_strides(y)
    prologue = scale is not None
    dummy = x  # never dereferenced when the matching flag is off
    meta = dict(_INTERP_GEMM) if triton_interpret() else {}

    def grid(m):
        return (triton.cdiv(c_out, m["BLOCK_CO"]) * triton.cdiv(h * w, m["BLOCK_P"]) * n,)

    _launch(_conv_gemm_kernel, grid, (
        x, wpack, bias if bias is not None else dummy, y,
        scale if prologue else dummy, shift if prologue else dummy,
        x.stride(0), x.stride(1), sx_h, sx_w, y.stride(0), y.stride(1), sy_h, sy_w,
        wpack.stride(0), wpack.stride(1), wpack.stride(2),
        c_red, c_out, h * w, w, num_frames, kt),
        dict(FLAT_X=flat_x, FLAT_Y=flat_y, HAS_BIAS=bias is not None, **_act_flags(x, prologue, silu),
             IEEE=_ieee(x), DTYPE_KEY=_dtype_key(x), **meta))
    return y


def _dw_blocks(c_out: int, c_in: int, dtype: torch.dtype) -> Tuple[int, int]:
    """(BLOCK_CO, BLOCK_CI) of the weight-gradient tiles: 128 x 128 tensor-core tiles, 64 x 64 for
    fp32 (CUDA-core dots) or narrow channel counts."""
    if triton_interpret():
        return 16, 16
    big = 64 if dtype == torch.float32 else 128
    return (big if c_out > 64 else 64), (big if c_in > 64 else 64)


def _weight_grad(dy: torch.Tensor, x: torch.Tensor, kt: int, num_frames: int,
                 scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                 silu: bool = False) -> torch.Tensor:
    """dW (C_out, C_in, K) in fp32: split-K partials over B*F*H*W, summed in a fixed order."""
    n, c_in, h, w = x.shape
    c_out = dy.shape[1]
    bco, bci = _dw_blocks(c_out, c_in, x.dtype)
    tiles = triton.cdiv(c_out, bco) * triton.cdiv(c_in, bci) * kt
    if triton_interpret():
        split = 2
    else:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        split = max(1, min(triton.cdiv(2 * sms, tiles), triton.cdiv(n * h * w, 4096)))
    part = torch.empty((split, c_out, c_in, kt), dtype=torch.float32, device=x.device)
    sd_h, sd_w, flat_d = _pixel_strides(dy)
    sx_h, sx_w, flat_x = _pixel_strides(x)
    prologue = scale is not None
    meta = {"BLOCK_CO": bco, "BLOCK_CI": bci}
    if triton_interpret():
        meta["BLOCK_P"] = 16

    grid = (triton.cdiv(c_out, bco) * triton.cdiv(c_in, bci), kt, split)
    _launch(_conv_dw_kernel, grid, (
        dy, x, scale if prologue else x, shift if prologue else x, part,
        dy.stride(0), dy.stride(1), sd_h, sd_w, x.stride(0), x.stride(1), sx_h, sx_w,
        part.stride(0), part.stride(1), part.stride(2), part.stride(3),
        c_in, c_out, h * w, w, num_frames, kt, n // num_frames, split),
        dict(FLAT_DY=flat_d, FLAT_X=flat_x, **_act_flags(x, prologue, silu),
             IEEE=_ieee(x), DTYPE_KEY=_dtype_key(x), **meta))
    return part.sum(0)


def _affine(x, num_groups, gn_weight, gn_bias, eps):
    """GroupNorm of x (N, C, H, W) folded into per-(frame, channel) scale/shift (N, C) fp32, plus
    mean, rstd (N, G) fp32: one stats kernel, two reads of x."""
    n, c, h, w = x.shape
    cpg = c // num_groups
    mean = torch.empty((n, num_groups), dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    scale = torch.empty((n, c), dtype=torch.float32, device=x.device)
    shift = torch.empty_like(scale)
    s_h, s_w, flat = _pixel_strides(x)
    block_c = triton.next_power_of_2(cpg)
    block_p = max(1, min(triton.next_power_of_2(h * w), (16 if triton_interpret() else 4096) // block_c))
    _gn_stats_kernel[(n * num_groups,)](
        x, gn_weight if gn_weight is not None else x, gn_bias if gn_bias is not None else x,
        mean, rstd, scale, shift, x.stride(0), x.stride(1), s_h, s_w,
        h * w, w, num_groups, cpg, 1.0 / (cpg * h * w), float(eps),
        HAS_GAMMA=gn_weight is not None, HAS_BETA=gn_bias is not None,
        FLAT=flat, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4)
    return scale, shift, mean, rstd


def _fwd_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, K) -> packed (K, C_in, C_out) for the forward GEMM."""
    return weight.permute(2, 1, 0).contiguous()


def _dx_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, K) -> transposed, tap-flipped (K, C_out, C_in) for the input-gradient GEMM."""
    return weight.flip(2).permute(2, 0, 1).contiguous()


def _bias_grad(dy: torch.Tensor, need: bool, c_out: int, dtype) -> torch.Tensor:
    if not need:
        return torch.zeros((c_out,), dtype=dtype, device=dy.device)
    return dy.sum(dim=(0, 2, 3), dtype=torch.float32).to(dtype)


def temporal_conv1d_fwd(x, weight, bias, num_frames: int):
    """y (B*F, C_out, H, W) in x's memory format."""
    return _gemm(x, _fwd_weight(weight), bias, num_frames, memory_format_of(x))


def temporal_conv1d_bwd(dy, x, weight, num_frames: int, need_bias_grad: bool):
    """(dx in x's memory format, dweight (C_out, C_in, K), dbias (C_out,)), x's dtype."""
    dx = _gemm(dy, _dx_weight(weight), None, num_frames, memory_format_of(x))
    dw = _weight_grad(dy, x, weight.shape[2], num_frames).to(weight.dtype)
    return dx, dw, _bias_grad(dy, need_bias_grad, weight.shape[0], weight.dtype)


def temporal_conv1d_gn_silu_fwd(x, weight, bias, gn_weight, gn_bias, num_frames: int,
                                num_groups: int, eps: float, silu: bool):
    """y = temporal_conv1d(act(GroupNorm(x)), ...) with the norm/act applied while loading x.
    ``num_groups == 0`` means no GroupNorm (then only the activation, if any)."""
    scale = shift = None
    if num_groups > 0:
        scale, shift, _, _ = _affine(x, num_groups, gn_weight, gn_bias, eps)
    elif not silu:
        return temporal_conv1d_fwd(x, weight, bias, num_frames)
    return _gemm(x, _fwd_weight(weight), bias, num_frames, memory_format_of(x), scale, shift, silu)


def _norm_act_backward(da, x, num_groups, gn_weight, scale, shift, mean, rstd, silu):
    """Backward of a = act(GroupNorm(x)) given da, recomputing the normalized input (fp32 torch).
    Returns (dx fp32 in x's memory format, dgamma (C,) fp32, dbeta (C,) fp32)."""
    n, c, h, w = x.shape
    xf = x.float()
    dz = da.float()
    if num_groups > 0:
        z = xf * scale[:, :, None, None] + shift[:, :, None, None]
    else:
        z = xf
    if silu:
        sig = torch.sigmoid(z)
        dz = dz * (sig * (1.0 + z * (1.0 - sig)))
    if num_groups == 0:
        return dz, None, None
    g = num_groups
    xhat = (xf.reshape(n, g, -1) - mean[:, :, None]) * rstd[:, :, None]
    dz_g = dz.reshape(n, g, -1)
    dgamma = (dz_g * xhat).reshape(n, c, h * w).sum(dim=(0, 2))
    dbeta = dz.sum(dim=(0, 2, 3))
    gamma = gn_weight.float() if gn_weight is not None else torch.ones(c, device=x.device)
    dxhat = (dz * gamma[None, :, None, None]).reshape(n, g, -1)
    dx = rstd[:, :, None] * (dxhat - dxhat.mean(-1, keepdim=True)
                             - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    return dx.reshape(n, c, h, w), dgamma, dbeta


def temporal_conv1d_gn_silu_bwd(dy, x, weight, gn_weight, gn_bias, num_frames: int,
                                num_groups: int, eps: float, silu: bool, need_bias_grad: bool):
    """(dx, dweight, dbias, dgn_weight, dgn_bias); the normalized input is recomputed, not saved.
    dx/dweight/dbias in x's dtype; dgn_weight/dgn_bias (C_in,) fp32 (zeros without GroupNorm)."""
    c_in = x.shape[1]
    fmt = memory_format_of(x)
    scale = shift = mean = rstd = None
    if num_groups > 0:
        scale, shift, mean, rstd = _affine(x, num_groups, gn_weight, gn_bias, eps)
    dw = _weight_grad(dy, x, weight.shape[2], num_frames, scale, shift, silu).to(weight.dtype)
    db = _bias_grad(dy, need_bias_grad, weight.shape[0], weight.dtype)
    da = _gemm(dy, _dx_weight(weight), None, num_frames, torch.contiguous_format, out_dtype=torch.float32)
    dx, dgamma, dbeta = _norm_act_backward(da, x, num_groups, gn_weight, scale, shift, mean, rstd, silu)
    dx = dx.to(x.dtype).contiguous(memory_format=fmt)
    if dgamma is None:
        dgamma = torch.zeros((c_in,), dtype=torch.float32, device=x.device)
        dbeta = torch.zeros((c_in,), dtype=torch.float32, device=x.device)
    return dx, dw, db, dgamma, dbeta


register_impl("temporal_conv1d_fwd", "triton", temporal_conv1d_fwd)
register_impl("temporal_conv1d_bwd", "triton", temporal_conv1d_bwd)
register_impl("temporal_conv1d_gn_silu_fwd", "triton", temporal_conv1d_gn_silu_fwd)
register_impl("temporal_conv1d_gn_silu_bwd", "triton", temporal_conv1d_gn_silu_bwd)
