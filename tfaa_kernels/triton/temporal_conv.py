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
- ``_conv_dw_kernel`` computes the weight gradient ``dW[:, :, t] = sum_{n, p} dy_n[:, p] a_{n+t-K//2}[:, p]^T``.
  One program owns a (C_out tile, C_in tile) pair for all K taps (K accumulators; K > 5 in tap
  groups) and walks the frames of a clip in order: the dy tile of frame n is loaded once and dotted
  with the x tiles of frames n-K//2 .. n+K//2 (reloaded from L2, or with RING kept in registers as
  the window slides). Programs split the (clip, pixel block) items; their fp32 partials (written
  once each) are summed by the host in a fixed order: deterministic always, so also when
  ``torch.are_deterministic_algorithms_enabled()``. Tile choice and traffic: see ``_dw_blocks``.
  The bias gradient ``dbias[co] = sum_{n, p} dy_n[co, p]`` is fused into it (``BIAS_GRAD``): the
  row sums of the dy tiles the programs load anyway, one fp32 partial per split (stored by the
  programs of input-channel tile 0 and tap group 0), summed by the host in the same fixed order.
  It replaces a separate torch reduction that re-read all of dy (84 MB, ~73 us at S1 on an H100).
- The GroupNorm statistics (``_affine``: per (frame, group) mean and 1/std folded into the
  per-(frame, channel) scale/shift of the prologue, one read of x) and the materialised
  act(GroupNorm(x)) (``_norm_act``, when C_out is too wide for the prologue to stay fused, see
  ``_FUSE_MAX_COUT``) live in tfaa_kernels.triton.group_norm_silu, with the ``_prologue``/SiLU
  device functions and the fast-SiLU fallback (``_launch``) shared by both modules; the fused
  layer's backward takes dW and da = dx of the conv from these kernels and the norm/act backward
  (dx, dgamma, dbeta) from tfaa_kernels.triton.group_norm_silu_backward.

- TMA (``TMA=1`` configurations of both kernels, autotuned): where x, y / dy and the packed
  weight qualify (tfaa_kernels.triton._tma: 16-byte aligned rows, one flat pixel stride, sm_90+),
  tiles move through tensor descriptors over (clips, F, ...) instead of pointer tensors; the copy
  engine zero-fills tails and out-of-clip frames. Faster where the problem is wide (S2 GEMM 0.142
  vs 0.154 ms on an H100), not at S1 (the autotuner keeps the pointer tiles there).

All offsets are int64. On the GPU block shapes are autotuned over the dtype's tiles (see
``_gemm_configs``; ``TFAA_AUTOTUNE=0`` takes the first that fits, as tfaa_kernels.triton._autotune
describes); in the interpreter (``TRITON_INTERPRET=1``) one small configuration runs.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._alloc import empty
from .._layout import memory_format_of
from ..backends import register_impl, triton_interpret
from ._autotune import tunable
from ._host import cdiv, next_power_of_2
from ._layout import _pixel_offsets, _pixel_strides
from ._tma import _frames_desc, _tma_load, _tma_store, tma_orientation, tma_strides_ok, tma_workspace
from .group_norm_silu import _act_flags, _affine, _launch, _norm_act, _prologue
from .group_norm_silu_backward import norm_act_backward

_GEMM_KEY = ["C_RED", "C_OUT", "HW", "FLAT_X", "FLAT_Y", "PROLOGUE", "SILU", "DTYPE_KEY", "TMA_OK", "X_CL", "Y_CL"]
_DW_KEY = ["C_IN", "C_OUT", "HW", "F", "KT", "FLAT_DY", "FLAT_X", "PROLOGUE", "SILU", "DTYPE_KEY", "TAPS",
           "BIAS_GRAD", "BLOCK_P", "BLOCK_CO", "BLOCK_CI", "TMA_OK", "X_CL", "DY_CL"]


def _gemm_configs():
    """(BLOCK_P, BLOCK_CO, BLOCK_CI, num_warps, num_stages, TMA) tried on the GPU: tensor-core tiles
    (BLOCK_CI = 64) for 16-bit inputs, the first one being the default when TFAA_AUTOTUNE=0; small
    tiles (BLOCK_CI = 32) for fp32, whose exact ("ieee") dots run on CUDA cores. TMA=1: the tiles
    are read (and y written) through tensor descriptors where the tensors allow it (``TMA_OK``;
    pruned otherwise). Measured on an H100, bf16 (S9-run 1, GPU time): at S2 (16x16 C1280) the
    128x256 TMA tile 0.139 ms vs 0.154 (NCHW) / 0.165 (channels_last) for the best pointer tiles;
    at S1 (64x64 C320) the pointer tiles win (0.190 vs 0.204)."""
    shapes = [(128, 128, 64, 8, 3, 0), (128, 128, 64, 4, 4, 0), (128, 64, 64, 4, 4, 0), (64, 128, 64, 4, 4, 0),
              (256, 64, 64, 8, 3, 0), (128, 256, 64, 8, 3, 0), (256, 128, 64, 8, 3, 0), (64, 256, 64, 8, 3, 0),
              (64, 64, 64, 4, 3, 0), (128, 256, 64, 8, 3, 1), (256, 128, 64, 8, 3, 1), (128, 128, 64, 4, 4, 1),
              (128, 128, 64, 8, 3, 1),
              (64, 64, 32, 4, 2, 0), (32, 64, 32, 4, 2, 0), (64, 32, 32, 4, 2, 0)]
    return [triton.Config({"BLOCK_P": bp, "BLOCK_CO": bco, "BLOCK_CI": bci, "TMA": tma}, num_warps=w, num_stages=s)
            for bp, bco, bci, w, s, tma in shapes]


def _arg(named_args, kwargs, name):
    return kwargs.get(name, named_args.get(name))


def _gemm_prune(configs, named_args, **kwargs):
    """The dtype's tiles (see _gemm_configs), none much larger than the problem."""
    fp32 = _arg(named_args, kwargs, "DTYPE_KEY") == 0
    tma_ok = bool(_arg(named_args, kwargs, "TMA_OK"))
    keep = [c for c in configs if (c.kwargs["BLOCK_CI"] == 32) == fp32 and (tma_ok or not c.kwargs["TMA"])]
    co_cap = max(64, next_power_of_2(int(_arg(named_args, kwargs, "C_OUT"))))
    p_cap = max(64, next_power_of_2(int(_arg(named_args, kwargs, "HW"))))
    fit = [c for c in keep if c.kwargs["BLOCK_CO"] <= co_cap and c.kwargs["BLOCK_P"] <= p_cap]
    if _arg(named_args, kwargs, "PROLOGUE") or _arg(named_args, kwargs, "SILU"):
        # the prologue runs once per (output-channel block, tap): one block over all of C_out where
        # a tile has room, so each x element is transformed K times
        wide = [c for c in fit if c.kwargs["BLOCK_CO"] >= min(co_cap, 256)]
        fit = wide or fit
    return fit or keep[:1] or configs[:1]


def _dw_configs():
    """(RING, num_warps, num_stages, TMA); BLOCK_P, BLOCK_CO, BLOCK_CI and TAPS are fixed by the
    host (they set the split and the partial buffer). RING=0 (each tap reloads its x tile, from L2)
    comes first, the default when TFAA_AUTOTUNE=0; 4 warps are the fp32 (CUDA-core) configs; TMA=1
    reads dy and x through tensor descriptors where they allow it (pruned otherwise)."""
    return [triton.Config({"RING": r, "TMA": tma}, num_warps=w, num_stages=st)
            for r, w, st, tma in ((0, 8, 3, 0), (1, 8, 3, 0), (0, 8, 2, 0), (1, 8, 2, 0),
                                  (0, 8, 3, 1), (1, 8, 3, 1), (0, 8, 4, 1), (0, 4, 2, 0), (1, 4, 2, 0))]


def _dw_prune(configs, named_args, **kwargs):
    fp32 = _arg(named_args, kwargs, "DTYPE_KEY") == 0
    tma_ok = bool(_arg(named_args, kwargs, "TMA_OK"))
    keep = [c for c in configs if (c.num_warps == 4) == fp32 and (tma_ok or not c.kwargs["TMA"])]
    return keep or configs[:1]


@triton.jit
def _mma(a, b, acc, IEEE: tl.constexpr):
    """acc + a @ b: exact fp32 ("ieee") dots for fp32 inputs, tensor-core dots otherwise."""
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@tunable(_gemm_configs(), key=_GEMM_KEY, prune=_gemm_prune)
@triton.jit
def _conv_gemm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, scale_ptr, shift_ptr,
    sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w, sw_t, sw_r, sw_o,
    C_RED, C_OUT, HW, W, F, KT, NB,
    FLAT_X: tl.constexpr, FLAT_Y: tl.constexpr, HAS_BIAS: tl.constexpr,
    PROLOGUE: tl.constexpr, SILU: tl.constexpr, TRANSFORM: tl.constexpr, FAST_SILU: tl.constexpr,
    IEEE: tl.constexpr, DTYPE_KEY: tl.constexpr, TMA_OK: tl.constexpr, X_CL: tl.constexpr, Y_CL: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, TMA: tl.constexpr,
):
    """y[n, co, p] = bias[co] + sum_{t, ci} w[t, ci, co] * act(x[n + t - KT//2, ci, p]) for the
    in-clip taps. w is a packed (KT, C_RED, C_OUT) view with strides (sw_t, sw_r, sw_o).
    Program = (frame n, pixel block, output-channel block), channel blocks fastest so programs
    that share an x tile run together. With TMA (and TMA_OK: x, y and w qualify, see
    tfaa_kernels.triton._tma; X_CL / Y_CL say which axis is contiguous) x, w and y move through
    tensor descriptors of the NB clips (bounds checks and tails by the copy engine)."""
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
    USE_TMA: tl.constexpr = TMA and TMA_OK
    if USE_TMA:
        clip = (n // F).to(tl.int32)
        x_desc = _frames_desc(x_ptr, NB, F, C_RED, HW, sx_n, sx_c, sx_w, X_CL, BLOCK_P, BLOCK_CI)
        w_desc = tl.make_tensor_descriptor(w_ptr, [KT, C_RED, C_OUT], [sw_t, sw_r, 1], [1, BLOCK_CI, BLOCK_CO])
    else:
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
        if USE_TMA:
            a = _tma_load(x_desc, clip, f + t - pad, p_blk * BLOCK_P, ci0, X_CL, BLOCK_P, BLOCK_CI)
            wt = w_desc.load([t, ci0, co_blk * BLOCK_CO]).reshape(BLOCK_CI, BLOCK_CO)
        else:
            a = tl.load(x_frame + ((t - pad).to(tl.int64) * sx_n + ci0.to(tl.int64) * sx_c) + x_tile,
                        mask=p_mask[:, None] & ci_mask[None, :], other=0.0)
            wt = tl.load(w_ptr + (t.to(tl.int64) * sw_t + ci0.to(tl.int64) * sw_r) + w_tile,
                         mask=ci_mask[:, None] & co_mask[None, :], other=0.0)
        if TRANSFORM:  # PROLOGUE or SILU (tails transform zeros; they meet zero weights or dropped rows)
            a = _prologue(a.to(tl.float32), scale_ptr, shift_ptr, n + (t - pad), ci0 + offs_ci, ci_mask, C_RED,
                          PROLOGUE, SILU, FAST_SILU).to(w_ptr.dtype.element_ty)
        acc = _mma(a, wt, acc, IEEE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_co, mask=co_mask, other=0.0).to(tl.float32)[None, :]
    if USE_TMA:
        y_desc = _frames_desc(y_ptr, NB, F, C_OUT, HW, sy_n, sy_c, sy_w, Y_CL, BLOCK_P, BLOCK_CO)
        _tma_store(y_desc, clip, f, p_blk * BLOCK_P, co_blk * BLOCK_CO, acc.to(y_ptr.dtype.element_ty),
                   Y_CL, BLOCK_P, BLOCK_CO)
    else:
        y_pix = _pixel_offsets(offs_p, W, sy_h, sy_w, FLAT_Y)
        tl.store(y_ptr + n * sy_n + y_pix[:, None] + offs_co.to(tl.int64)[None, :] * sy_c,
                 acc.to(y_ptr.dtype.element_ty), mask=p_mask[:, None] & co_mask[None, :])


@triton.jit
def _dw_tile(x_ptr, x_desc, scale_ptr, shift_ptr, clip, frame, F, p0, ci0, x_tile, offs_pb, offs_ci, ci_mask,
             HW, W, sx_n, sx_h, sx_w, C_IN,
             FLAT_X: tl.constexpr, PROLOGUE: tl.constexpr, SILU: tl.constexpr, TRANSFORM: tl.constexpr,
             FAST_SILU: tl.constexpr, USE_TMA: tl.constexpr, X_CL: tl.constexpr,
             BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr):
    """act(x[clip * F + frame, ci tile, p0 + pixel block]) as a [BLOCK_P, BLOCK_CI] dot operand; all
    zeros when ``frame`` lies outside [0, F) (zero padding of the clip, also after the prologue).
    USE_TMA: through the clip descriptor ``x_desc`` (it zero-fills tails and out-of-clip frames)."""
    valid = (frame >= 0) & (frame < F)
    n_src = clip.to(tl.int64) * F + frame
    p_mask = offs_pb < HW - p0
    m = (p_mask[:, None] & ci_mask[None, :]) & valid
    if USE_TMA:
        a = _tma_load(x_desc, clip, frame, p0, ci0, X_CL, BLOCK_P, BLOCK_CI)
    else:
        if FLAT_X:
            ptrs = x_ptr + (n_src * sx_n + p0.to(tl.int64) * sx_w) + x_tile
        else:
            ptrs = (x_ptr + n_src * sx_n + _pixel_offsets(p0 + offs_pb, W, sx_h, sx_w, False)[:, None]
                    + x_tile)
        a = tl.load(ptrs, mask=m, other=0.0)
    if TRANSFORM:  # PROLOGUE or SILU: masked elements must stay zero after the transform
        a = _prologue(a.to(tl.float32), scale_ptr, shift_ptr, n_src, offs_ci, ci_mask & valid, C_IN,
                      PROLOGUE, SILU, FAST_SILU)
        a = tl.where(m, a, 0.0)
    return a.to(x_ptr.dtype.element_ty)


@triton.jit
def _dw_store(part_ptr, acc, t, KT, s, offs_co, offs_ci, co_mask, ci_mask, sp_s, sp_o, sp_i, sp_t):
    out = (part_ptr + s.to(tl.int64) * sp_s + offs_co.to(tl.int64)[:, None] * sp_o
           + offs_ci.to(tl.int64)[None, :] * sp_i + t.to(tl.int64) * sp_t)
    tl.store(out, acc, mask=co_mask[:, None] & ci_mask[None, :] & (t < KT))


@tunable(_dw_configs(), key=_DW_KEY, prune=_dw_prune)
@triton.jit
def _conv_dw_kernel(
    dy_ptr, x_ptr, scale_ptr, shift_ptr, part_ptr, bpart_ptr,
    sd_n, sd_c, sd_h, sd_w, sx_n, sx_c, sx_h, sx_w, sp_s, sp_o, sp_i, sp_t, sb_s,
    C_IN, C_OUT, HW, W, F, KT, N_ITEMS, PER_SPLIT, NB,
    FLAT_DY: tl.constexpr, FLAT_X: tl.constexpr,
    PROLOGUE: tl.constexpr, SILU: tl.constexpr, TRANSFORM: tl.constexpr, FAST_SILU: tl.constexpr,
    IEEE: tl.constexpr, DTYPE_KEY: tl.constexpr, TAPS: tl.constexpr, RING: tl.constexpr,
    BIAS_GRAD: tl.constexpr, TMA_OK: tl.constexpr, X_CL: tl.constexpr, DY_CL: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, TMA: tl.constexpr,
):
    """part[s, co, ci, t] = sum over split s of dy[n, co, p] * act(x[n + t - KT//2, ci, p]) for the
    TAPS taps t0 .. t0+TAPS-1 of this program's tap group, all accumulated by one program; with
    BIAS_GRAD also bpart[s, co] = sum over split s of dy[n, co, p] (the bias gradient's partials).

    Grid: (channel tiles, tap groups, splits). A split is a range of PER_SPLIT items = (clip, pixel
    block); for each item the program walks the clip's frames in order, loads the dy tile of frame
    n once and dots it with the x tiles of frames n + t - KT//2 for its taps. With RING the x tiles
    are kept in registers as the window slides (x_m is loaded, and transformed by the prologue, once
    per walk; the walk starts TAPS-1 frames early with a zero dy to fill the window); without it each
    tap reloads its tile (the repeats hit L2). Accumulators are named by recency d (tap
    t0 + TAPS-1-d uses the x frame loaded d steps ago) so that TAPS stays a constexpr up to 5.

    Bias gradient (BIAS_GRAD): every program loads each dy tile of its C_out tile in its split's
    items exactly once (a zero tile in the RING warm-up), so the row sums of those tiles are that
    split's bias-gradient partial. They are accumulated as one more dot, ``dy @ ones`` into a
    (BLOCK_CO, 16) fp32 tile (every column the row sum; column 0 is stored), not with ``tl.sum``: a
    cross-warp reduction inside this pipelined tensor-core loop corrupted dW on the H100 (wrong and
    run-to-run different at 16 frames x 320 channels, GPU session 3), the dot stays on the path the
    loop already uses. The programs of C_in tile 0 and tap group 0 store it in bpart[s, C_out tile].

    TMA (with TMA_OK: dy and x qualify, see tfaa_kernels.triton._tma): the dy and x tiles come
    through descriptors over the NB clips; frames outside a clip (the warm-up's n < 0 and the taps
    past either end) read as zeros without masks."""
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    s = tl.program_id(2)
    n_ci = tl.cdiv(C_IN, BLOCK_CI)
    co_blk = pid // n_ci
    ci_blk = pid % n_ci
    pad = KT // 2
    t0 = grp * TAPS
    # x frame of recency 0 at dy frame n: n + (t0 + TAPS - 1) - pad
    D = t0 + TAPS - 1 - pad
    WARM: tl.constexpr = (TAPS - 1) * RING
    L = F + WARM  # walk length per item
    n_pb = tl.cdiv(HW, BLOCK_P)
    start = s * PER_SPLIT
    end = tl.minimum(N_ITEMS, start + PER_SPLIT)

    offs_co = co_blk * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_ci = ci_blk * BLOCK_CI + tl.arange(0, BLOCK_CI)
    co_mask = offs_co < C_OUT
    ci_mask = offs_ci < C_IN
    offs_pb = tl.arange(0, BLOCK_P)
    ci0 = ci_blk * BLOCK_CI
    USE_TMA: tl.constexpr = TMA and TMA_OK
    if USE_TMA:
        dy_desc = _frames_desc(dy_ptr, NB, F, C_OUT, HW, sd_n, sd_c, sd_w, DY_CL, BLOCK_P, BLOCK_CO)
        x_desc = _frames_desc(x_ptr, NB, F, C_IN, HW, sx_n, sx_c, sx_w, X_CL, BLOCK_P, BLOCK_CI)
        x_tile = 0
    else:
        x_desc = x_ptr  # not read
        # int64 tile offsets of pixel block 0 (the pixel part only when the pixels have one flat stride)
        if FLAT_DY:
            d_tile = (offs_co.to(tl.int64)[:, None] * sd_c
                      + _pixel_offsets(offs_pb, W, sd_h, sd_w, FLAT_DY)[None, :])
        else:
            d_tile = offs_co.to(tl.int64)[:, None] * sd_c
        if FLAT_X:
            x_tile = (_pixel_offsets(offs_pb, W, sx_h, sx_w, FLAT_X)[:, None]
                      + offs_ci.to(tl.int64)[None, :] * sx_c)
        else:
            x_tile = offs_ci.to(tl.int64)[None, :] * sx_c

    acc0 = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
    acc3 = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
    acc4 = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
    # bias gradient: dy @ ones on the tensor cores, every column of bacc is the row sum of dy
    bacc = tl.zeros((BLOCK_CO, 16), dtype=tl.float32)
    ones = tl.full((BLOCK_P, 16), 1.0, dtype=dy_ptr.dtype.element_ty)
    bias_prog = (ci_blk == 0) & (grp == 0)  # the programs that store the bias-gradient partial
    r1 = tl.zeros((BLOCK_P, BLOCK_CI), dtype=x_ptr.dtype.element_ty)
    r2 = tl.zeros((BLOCK_P, BLOCK_CI), dtype=x_ptr.dtype.element_ty)
    r3 = tl.zeros((BLOCK_P, BLOCK_CI), dtype=x_ptr.dtype.element_ty)
    r4 = tl.zeros((BLOCK_P, BLOCK_CI), dtype=x_ptr.dtype.element_ty)
    for i in range(start * L, end * L):
        item = i // L
        n_f = i - item * L - WARM  # dy frame in the clip (< 0: window warm-up, dy is zero)
        clip = item // n_pb
        p0 = (item % n_pb) * BLOCK_P
        m_f = n_f + D
        if USE_TMA:
            dy = _tma_load(dy_desc, clip, n_f, p0, co_blk * BLOCK_CO, DY_CL, BLOCK_P, BLOCK_CO).T
        else:
            clip0 = clip.to(tl.int64) * F
            p_mask = offs_pb < HW - p0
            if FLAT_DY:
                d_ptrs = dy_ptr + ((clip0 + n_f) * sd_n + p0.to(tl.int64) * sd_w) + d_tile
            else:
                d_ptrs = (dy_ptr + (clip0 + n_f) * sd_n + d_tile
                          + _pixel_offsets(p0 + offs_pb, W, sd_h, sd_w, False)[None, :])
            dy = tl.load(d_ptrs, mask=(co_mask[:, None] & p_mask[None, :]) & (n_f >= 0), other=0.0)
        if BIAS_GRAD:  # masked elements (warm-up steps n_f < 0, rows past C_out, pixels past HW) are 0
            bacc = _mma(dy, ones, bacc, IEEE)
        a0 = _dw_tile(x_ptr, x_desc, scale_ptr, shift_ptr, clip, m_f, F, p0, ci0, x_tile, offs_pb,
                      offs_ci, ci_mask, HW, W, sx_n, sx_h, sx_w, C_IN, FLAT_X, PROLOGUE, SILU,
                      TRANSFORM, FAST_SILU, USE_TMA, X_CL, BLOCK_P, BLOCK_CI)
        acc0 = _mma(dy, a0, acc0, IEEE)
        if TAPS >= 2:
            if RING:
                a1 = r1
            else:
                a1 = _dw_tile(x_ptr, x_desc, scale_ptr, shift_ptr, clip, m_f - 1, F, p0, ci0, x_tile, offs_pb,
                              offs_ci, ci_mask, HW, W, sx_n, sx_h, sx_w, C_IN, FLAT_X, PROLOGUE, SILU,
                              TRANSFORM, FAST_SILU, USE_TMA, X_CL, BLOCK_P, BLOCK_CI)
            acc1 = _mma(dy, a1, acc1, IEEE)
        if TAPS >= 3:
            if RING:
                a2 = r2
            else:
                a2 = _dw_tile(x_ptr, x_desc, scale_ptr, shift_ptr, clip, m_f - 2, F, p0, ci0, x_tile, offs_pb,
                              offs_ci, ci_mask, HW, W, sx_n, sx_h, sx_w, C_IN, FLAT_X, PROLOGUE, SILU,
                              TRANSFORM, FAST_SILU, USE_TMA, X_CL, BLOCK_P, BLOCK_CI)
            acc2 = _mma(dy, a2, acc2, IEEE)
        if TAPS >= 4:
            if RING:
                a3 = r3
            else:
                a3 = _dw_tile(x_ptr, x_desc, scale_ptr, shift_ptr, clip, m_f - 3, F, p0, ci0, x_tile, offs_pb,
                              offs_ci, ci_mask, HW, W, sx_n, sx_h, sx_w, C_IN, FLAT_X, PROLOGUE, SILU,
                              TRANSFORM, FAST_SILU, USE_TMA, X_CL, BLOCK_P, BLOCK_CI)
            acc3 = _mma(dy, a3, acc3, IEEE)
        if TAPS >= 5:
            if RING:
                a4 = r4
            else:
                a4 = _dw_tile(x_ptr, x_desc, scale_ptr, shift_ptr, clip, m_f - 4, F, p0, ci0, x_tile, offs_pb,
                              offs_ci, ci_mask, HW, W, sx_n, sx_h, sx_w, C_IN, FLAT_X, PROLOGUE, SILU,
                              TRANSFORM, FAST_SILU, USE_TMA, X_CL, BLOCK_P, BLOCK_CI)
            acc4 = _mma(dy, a4, acc4, IEEE)
        if RING:  # slide the window (stale entries only ever meet the zero dy of the warm-up)
            if TAPS >= 5:
                r4 = r3
            if TAPS >= 4:
                r3 = r2
            if TAPS >= 3:
                r2 = r1
            if TAPS >= 2:
                r1 = a0
    # recency d holds tap t0 + TAPS - 1 - d
    _dw_store(part_ptr, acc0, t0 + TAPS - 1, KT, s, offs_co, offs_ci, co_mask, ci_mask, sp_s, sp_o, sp_i, sp_t)
    if TAPS >= 2:
        _dw_store(part_ptr, acc1, t0 + TAPS - 2, KT, s, offs_co, offs_ci, co_mask, ci_mask,
                  sp_s, sp_o, sp_i, sp_t)
    if TAPS >= 3:
        _dw_store(part_ptr, acc2, t0 + TAPS - 3, KT, s, offs_co, offs_ci, co_mask, ci_mask,
                  sp_s, sp_o, sp_i, sp_t)
    if TAPS >= 4:
        _dw_store(part_ptr, acc3, t0 + TAPS - 4, KT, s, offs_co, offs_ci, co_mask, ci_mask,
                  sp_s, sp_o, sp_i, sp_t)
    if TAPS >= 5:
        _dw_store(part_ptr, acc4, t0 + TAPS - 5, KT, s, offs_co, offs_ci, co_mask, ci_mask,
                  sp_s, sp_o, sp_i, sp_t)
    if BIAS_GRAD:
        bsum = tl.sum(tl.where((tl.arange(0, 16) == 0)[None, :], bacc, 0.0), axis=1)  # column 0, exact
        tl.store(bpart_ptr + s.to(tl.int64) * sb_s + offs_co, bsum, mask=co_mask & bias_prog)


# ----------------------------------------------------------------------------------- host side
_INTERP_GEMM = {"BLOCK_P": 16, "BLOCK_CO": 16, "BLOCK_CI": 16, "TMA": 1}  # TMA where the tensors allow it
# A GEMM / weight-gradient configuration forced on the GPU, bypassing the autotuner (a
# ``triton.Config``; the GPU tests run every one of _gemm_configs() / _dw_configs() through them).
# None: autotuned.
_GEMM_FORCE: Optional[triton.Config] = None
_DW_FORCE: Optional[triton.Config] = None


def _forced(kernel, config: Optional[triton.Config]):
    """(kernel, meta) for a launch: the interpreter's small blocks are set by the caller; a forced
    config runs the JIT function under the autotuner with the config's meta."""
    if triton_interpret() or config is None:
        return kernel, {}
    return kernel.fn, dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def _dtype_key(t: torch.Tensor) -> int:
    return {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[t.dtype]


def _ieee(t: torch.Tensor) -> bool:
    """fp32 dots are exact (IEEE) unless torch allows TF32 matmuls."""
    return t.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32


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
    kernel, meta = _forced(_conv_gemm_kernel, _GEMM_FORCE)
    if triton_interpret():
        meta = dict(_INTERP_GEMM)

    x_cl, y_cl = tma_orientation(x, num_frames), tma_orientation(y, num_frames)
    tma_ok = x_cl is not None and y_cl is not None and tma_strides_ok(wpack)

    def grid(m):
        return (cdiv(c_out, m["BLOCK_CO"]) * cdiv(h * w, m["BLOCK_P"]) * n,)

    def launch():
        _launch(kernel, grid, (
            x, wpack, bias if bias is not None else dummy, y,
            scale if prologue else dummy, shift if prologue else dummy,
            x.stride(0), x.stride(1), sx_h, sx_w, y.stride(0), y.stride(1), sy_h, sy_w,
            wpack.stride(0), wpack.stride(1), wpack.stride(2),
            c_red, c_out, h * w, w, num_frames, kt, n // num_frames),
            dict(FLAT_X=flat_x, FLAT_Y=flat_y, HAS_BIAS=bias is not None, **_act_flags(x, prologue, silu),
                 IEEE=_ieee(x), DTYPE_KEY=_dtype_key(x), TMA_OK=tma_ok, X_CL=bool(x_cl), Y_CL=bool(y_cl),
                 **meta))
    tma_workspace(x.device, launch, needed=tma_ok)
    return y


# Weight gradient: tile choice (bf16/fp16; S1 = B2 F16 C320 64x64 K3, x and dy 84 MB each).
# dW is a GEMM (C_out) x (K*C_in) reduced over B*F*H*W = 131072: 80.5 GFLOP (77 in-clip).
# One program owns a (BLOCK_CO x BLOCK_CI) channel tile for all K taps (K accumulators), so it reads
# its dy tile once and the x tiles of the K frames around it: L2->SM traffic is
#   dy * ceil(C_in/BLOCK_CI) + x * ceil(C_out/BLOCK_CO) * (K, or 1 with RING)
# instead of (n_ci + n_co) * K reads of the old per-tap programs. 128 x 64 tiles (K accumulators:
# 3 * 128 * 64 fp32 = 96 registers a thread at 8 warps) cover C=320 as 3 x 5 tiles: FLOP waste
# 384/320 = 1.2 (the old 128 x 128 tiles: 1.44); traffic 5 * 84 + 3 * 3 * 84 = 1.18 GB (RING: 0.67 GB)
# vs 9 * 84 * 2 = 1.5 GB; DRAM ~170 MB when the programs of one split share L2 (they run together:
# channel tiles vary fastest in the grid). Predicted S1 dW: ~96 GFLOP at ~450-550 TFLOP/s and
# ~1.2 GB at ~6 TB/s from L2 -> ~0.2-0.25 ms; with dx (= forward GEMM, 0.195 ms) and the partial
# sum: S1 backward ~0.45-0.5 ms, forward+backward ~0.65-0.7 ms (was 1.62).
# dbias is fused into these programs (BIAS_GRAD): no separate pass over dy (the torch reduction it
# replaces cost ~73 us at S1 on an H100). Inside the kernel it is one (BLOCK_CO x BLOCK_P) @
# (BLOCK_P x 16) dot per dy tile, 16/(TAPS * BLOCK_CI) = 8% more tensor-core work at S1, in every
# program (a uniform branch around it gets if-converted), and a (split, C_out) fp32 partial.
_DW_ACC_BUDGET = 3 * 128 * 64   # fp32 accumulator elements a program may hold (all taps)
_DW_MAX_TAPS = 5                # taps one program can accumulate (acc0..acc4 in the kernel)
_INTERP_DW = {"BLOCK_P": 16, "BLOCK_CO": 16, "BLOCK_CI": 16, "RING": 0, "TMA": 1}


def _dw_blocks(c_out: int, c_in: int, kt: int, dtype: torch.dtype) -> Tuple[int, int, int, int]:
    """(BLOCK_P, BLOCK_CO, BLOCK_CI, TAPS) of the weight-gradient programs: 64-wide input-channel
    tiles (C = 320 = 5 x 64, no waste), 128-wide output-channel tiles while the K accumulators fit
    the budget (else 64), fp32 (CUDA-core dots) 32 x 64 x 32. TAPS: the taps one program
    accumulates, K split into the fewest groups of at most _DW_MAX_TAPS."""
    groups = cdiv(kt, _DW_MAX_TAPS)
    taps = cdiv(kt, groups)
    if triton_interpret():
        return _INTERP_DW["BLOCK_P"], _INTERP_DW["BLOCK_CO"], _INTERP_DW["BLOCK_CI"], taps
    if dtype == torch.float32:
        return 32, 64 if c_out > 32 else 32, 32, taps
    bci = 64
    bco = 128 if c_out > 64 and taps * 128 * bci <= _DW_ACC_BUDGET else 64
    return 64, bco, bci, taps


def _dw_split(items: int, tiles: int, sms: int, item_s: float, part_bytes: int) -> int:
    """Number of splits of the (clip, pixel block) items.

    When the channel tiles fit one wave (tiles <= sms): the most splits that still fit it. Else:
    minimise the modelled time waves * items per program * item_s (one resident program per SM
    assumed) plus writing and summing the fp32 partials (part_bytes per split, ~2.5 TB/s).
    The one-wave rule because the kernel is bound by L2->SM traffic (3.3-4.3 TB/s at S1, S2 and
    32x32 C640 on an H100, S9), which the split does not change, so a second, partly filled wave
    costs more than the wave model says. Measured (S9-runs 5, 6, bf16, GPU time): 32x32 C640
    (50 tiles) split 2 (one wave of 100 programs) 0.284 ms vs the model's 5 (250 programs, two
    waves) 0.31-0.34 ms; S1 (15 tiles) split 8 0.274 ms vs 6 0.344 and 16 0.326; S2 (200 tiles,
    the model) split 1 0.32 ms vs 2 0.40."""
    if 0 < tiles <= sms:
        fit = [s for s in range(1, min(items, sms // tiles) + 1) if cdiv(items, cdiv(items, s)) == s]
        return fit[-1] if fit else 1
    best, best_cost = 1, None
    for split in range(1, min(items, 8 * sms) + 1):
        per = cdiv(items, split)
        if cdiv(items, per) != split:
            continue  # same per-program work as a smaller split
        cost = cdiv(tiles * split, sms) * per * item_s + split * part_bytes * 2 / 2.5e12
        if best_cost is None or cost < best_cost:
            best, best_cost = split, cost
    return best


def _weight_grad(dy: torch.Tensor, x: torch.Tensor, kt: int, num_frames: int,
                 scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                 silu: bool = False, bias_grad: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(dW (C_out, C_in, K), dbias (C_out,) or None without ``bias_grad``), both fp32: split-K
    partials over (clip, pixel block) items, each program accumulating all the taps of its group,
    and (bias_grad) the row sums of the dy tiles the programs load anyway (bpart (split, C_out),
    written by the C_in-tile-0 / tap-group-0 programs); both summed over the splits in a fixed
    order (deterministic)."""
    n, c_in, h, w = x.shape
    c_out = dy.shape[1]
    hw = h * w
    bp, bco, bci, taps = _dw_blocks(c_out, c_in, kt, x.dtype)
    groups = cdiv(kt, taps)
    tiles = cdiv(c_out, bco) * cdiv(c_in, bci) * groups
    items = (n // num_frames) * cdiv(hw, bp)
    if triton_interpret():
        split = min(2, max(1, items))
    else:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        # one item = a walk over the clip's frames: TAPS dots of BLOCK_CO x BLOCK_CI x BLOCK_P per frame,
        # at ~4 TFLOP/s per SM (16-bit tensor cores; fp32 CUDA-core dots are ~10x slower)
        rate = 0.4e12 if x.dtype == torch.float32 else 4e12
        item_s = 2.0 * bco * bci * bp * taps * num_frames / rate
        split = _dw_split(items, tiles, sms, item_s, c_out * c_in * kt * 4)
    per = cdiv(items, split)
    part = torch.empty((split, c_out, c_in, kt), dtype=torch.float32, device=x.device)
    bpart = empty((split, c_out), torch.float32, x.device) if bias_grad else part  # part: not written
    sd_h, sd_w, flat_d = _pixel_strides(dy)
    sx_h, sx_w, flat_x = _pixel_strides(x)
    prologue = scale is not None
    kernel, meta = _forced(_conv_dw_kernel, _DW_FORCE)
    meta.update(BLOCK_P=bp, BLOCK_CO=bco, BLOCK_CI=bci, TAPS=taps)
    if triton_interpret():
        meta.update(RING=_INTERP_DW["RING"], TMA=_INTERP_DW["TMA"])
    x_cl, dy_cl = tma_orientation(x, num_frames), tma_orientation(dy, num_frames)
    tma_ok = x_cl is not None and dy_cl is not None

    grid = (cdiv(c_out, bco) * cdiv(c_in, bci), groups, split)

    def launch():
        _launch(kernel, grid, (
            dy, x, scale if prologue else x, shift if prologue else x, part, bpart,
            dy.stride(0), dy.stride(1), sd_h, sd_w, x.stride(0), x.stride(1), sx_h, sx_w,
            part.stride(0), part.stride(1), part.stride(2), part.stride(3), bpart.stride(0),
            c_in, c_out, hw, w, num_frames, kt, items, per, n // num_frames),
            dict(FLAT_DY=flat_d, FLAT_X=flat_x, **_act_flags(x, prologue, silu),
                 IEEE=_ieee(x), DTYPE_KEY=_dtype_key(x), BIAS_GRAD=bias_grad, TMA_OK=tma_ok,
                 X_CL=bool(x_cl), DY_CL=bool(dy_cl), **meta))
    tma_workspace(x.device, launch, needed=tma_ok)
    dw = part[0] if split == 1 else part.sum(0)
    if not bias_grad:
        return dw, None
    return dw, bpart[0] if split == 1 else bpart.sum(0)


@triton.jit
def _tap_major_kernel(w_ptr, out_ptr, C_OUT, C_IN, KT, so_t, so_o, so_i,
                      FLIP: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr):
    """out[t', co, ci] = w[co, ci, t] (w contiguous (C_OUT, C_IN, KT); out through its strides;
    t' = KT-1-t with FLIP). One (co, ci) tile per program, all taps; Triton stages the tile through
    shared memory when the store's contiguous axis differs from the load's."""
    co = tl.program_id(0) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    ci = tl.program_id(1) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    mask = (co < C_OUT)[:, None] & (ci < C_IN)[None, :]
    src = w_ptr + (co.to(tl.int64)[:, None] * C_IN + ci[None, :]) * KT
    dst = out_ptr + co.to(tl.int64)[:, None] * so_o + ci.to(tl.int64)[None, :] * so_i
    for t in range(0, KT):
        tt = KT - 1 - t if FLIP else t
        tl.store(dst + tt * so_t, tl.load(src + t, mask=mask), mask=mask)


def _tap_major(weight: torch.Tensor, perm, flip: bool) -> torch.Tensor:
    """The packed copy of ``weight`` (C_out, C_in, K) that a GEMM reads: a contiguous tensor whose
    dims are ``perm`` of (tap, C_out, C_in) (taps reversed with ``flip``), in one pass (torch's
    strided permute copy of the S2 weight, 9.8 MB, took ~25 us on an H100)."""
    c_out, c_in, kt = weight.shape
    w = weight.contiguous()
    out = empty(tuple((kt, c_out, c_in)[axis] for axis in perm), weight.dtype, weight.device)
    strides = [0, 0, 0]
    for dim, axis in enumerate(perm):
        strides[axis] = out.stride(dim)
    if out.numel():
        grid = (cdiv(c_out, 32), cdiv(c_in, 32))
        _tap_major_kernel[grid](w, out, c_out, c_in, kt, *strides, FLIP=flip, BLOCK_CO=32, BLOCK_CI=32)
    return out


def _fwd_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, K) -> packed (K, C_in, C_out) for the forward GEMM (= weight.permute(2, 1, 0))."""
    return _tap_major(weight, (0, 2, 1), flip=False)


def _dx_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, K) -> transposed, tap-flipped (K, C_out, C_in) for the input-gradient GEMM
    (= weight.flip(2).permute(2, 0, 1))."""
    return _tap_major(weight, (0, 1, 2), flip=True)


def _bias_grad(db: Optional[torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """dbias (C_out,) in weight's dtype: the fp32 sum from the weight-gradient kernel
    (``_weight_grad(..., bias_grad=True)``), or zeros when the bias needs no gradient (None)."""
    if db is None:
        return torch.zeros((weight.shape[0],), dtype=weight.dtype, device=weight.device)
    return db.to(weight.dtype)


def temporal_conv1d_fwd(x, weight, bias, num_frames: int):
    """y (B*F, C_out, H, W) in x's memory format."""
    return _gemm(x, _fwd_weight(weight), bias, num_frames, memory_format_of(x))


def temporal_conv1d_bwd(dy, x, weight, num_frames: int, need_bias_grad: bool):
    """(dx in x's memory format, dweight (C_out, C_in, K), dbias (C_out,)), x's dtype."""
    dx = _gemm(dy, _dx_weight(weight), None, num_frames, memory_format_of(x))
    dw, db = _weight_grad(dy, x, weight.shape[2], num_frames, bias_grad=need_bias_grad)
    return dx, dw.to(weight.dtype), _bias_grad(db, weight)


# The fused forward applies the norm/act prologue to each x tile once per (output-channel block,
# tap): K * ceil(C_out / BLOCK_CO) transforms per x element (S1, C_out = 320 in 128-wide blocks:
# 9, measured 0.467 ms against 0.195 for the plain GEMM; the prologue's MUFU/FMA work serialises
# with the tensor cores). Up to _FUSE_MAX_COUT output channels one block covers C_out (K
# transforms an element) and the prologue stays fused; above it act(GroupNorm(x)) is written once
# by group_norm_silu._norm_act (one read + one write of x: 168 MB at S1, ~0.06 ms at 3 TB/s) and the
# plain GEMM reads it. The earlier two-pass statistics and 3-D-grid apply measured 86 us and
# ~0.27 ms together at S1 on an H100; the one-read statistics and flat apply that replaced them
# measured 35 + 59 us there (NCHW, GPU time of CUDA-graph replays; floor 3 x 84 MB ~ 0.084 ms at
# 3.0 TB/s), so S1 stats + apply + GEMM (0.195) ~ 0.29 ms was predicted for this path; measured
# 0.292 ms (forward, GPU time, RESULTS.md S3-run 6).
_FUSE_MAX_COUT = 128


def temporal_conv1d_gn_silu_fwd(x, weight, bias, gn_weight, gn_bias, num_frames: int,
                                num_groups: int, eps: float, silu: bool):
    """y = temporal_conv1d(act(GroupNorm(x)), ...): the norm/act applied while loading x when one
    output-channel block covers C_out (<= _FUSE_MAX_COUT), else written once and then convolved.
    ``num_groups == 0`` means no GroupNorm (then only the activation, if any)."""
    scale = shift = None
    if num_groups > 0:
        scale, shift, _, _ = _affine(x, num_groups, gn_weight, gn_bias, eps)
    elif not silu:
        return temporal_conv1d_fwd(x, weight, bias, num_frames)
    fmt = memory_format_of(x)
    if weight.shape[0] > _FUSE_MAX_COUT:
        return _gemm(_norm_act(x, scale, shift, silu), _fwd_weight(weight), bias, num_frames, fmt)
    return _gemm(x, _fwd_weight(weight), bias, num_frames, fmt, scale, shift, silu)


def temporal_conv1d_gn_silu_bwd(dy, x, weight, gn_weight, gn_bias, num_frames: int,
                                num_groups: int, eps: float, silu: bool, need_bias_grad: bool):
    """(dx, dweight, dbias, dgn_weight, dgn_bias); the normalized input is recomputed, not saved.
    dx/dweight/dbias in x's dtype; dgn_weight/dgn_bias (C_in,) fp32 (zeros without GroupNorm)."""
    c_in = x.shape[1]
    fmt = memory_format_of(x)
    scale = shift = mean = rstd = None
    if num_groups > 0:
        scale, shift, mean, rstd = _affine(x, num_groups, gn_weight, gn_bias, eps)
    if weight.shape[0] > _FUSE_MAX_COUT:  # as in the forward: act(GroupNorm(x)) once, then plain dW
        dw, db = _weight_grad(dy, _norm_act(x, scale, shift, silu), weight.shape[2], num_frames,
                              bias_grad=need_bias_grad)
    else:
        dw, db = _weight_grad(dy, x, weight.shape[2], num_frames, scale, shift, silu, bias_grad=need_bias_grad)
    dw = dw.to(weight.dtype)
    db = _bias_grad(db, weight)
    da = _gemm(dy, _dx_weight(weight), None, num_frames, fmt, out_dtype=torch.float32)
    stats = (scale, shift, mean, rstd) if num_groups > 0 else None
    dx, dgamma, dbeta = norm_act_backward(da, x, num_groups, gn_weight, stats, silu)
    if dgamma is None:
        dgamma = torch.zeros((c_in,), dtype=torch.float32, device=x.device)
        dbeta = torch.zeros((c_in,), dtype=torch.float32, device=x.device)
    return dx, dw, db, dgamma, dbeta


register_impl("temporal_conv1d_fwd", "triton", temporal_conv1d_fwd)
register_impl("temporal_conv1d_bwd", "triton", temporal_conv1d_bwd)
register_impl("temporal_conv1d_gn_silu_fwd", "triton", temporal_conv1d_gn_silu_fwd)
register_impl("temporal_conv1d_gn_silu_bwd", "triton", temporal_conv1d_gn_silu_bwd)
