"""Triton kernels of the temporal 1D conv (DESIGN.md §1b) and its fused GroupNorm+SiLU prologue.

Layout: ``x`` is ``(B*F, C, H, W)``, NCHW or channels_last (or any strided view), read through
its four strides; a frame ``n`` is a ``(C, H*W)`` matrix. The conv is an implicit GEMM per frame:

    y_f[p, :] = bias + sum_t  x_{f+t-K//2}[p, :] @ Wp[t]          Wp = weight.permute(2, 1, 0)

M runs over the pixels ``p`` of one frame, N over output channels, and the reduction over
(tap, input channel) in one flat loop whose bounds skip the taps that fall outside the clip (they
are never read, there is no padded copy). Nothing is rearranged and no per-tap partial output is
written: y is stored once, in x's memory format. A last GEMM wave that would run at most half full
runs its tiles as two half-width programs each (``_tail_tiles``).

- ``_conv_gemm_kernel`` computes the forward, and with the transposed, tap-flipped weight
  ``weight.flip(2).permute(2, 0, 1)`` the input gradient (dx_g = sum_s dy_{g+s-K//2} @ W'[s]).
  An optional prologue applies ``a = act(x * scale[n, c] + shift[n, c])`` while the x tile is
  loaded (GroupNorm folded into a per-(frame, channel) affine, then SiLU).
- ``_conv_dw_kernel`` computes the weight gradient ``dW[:, :, t] = sum_{n, p} dy_n[:, p] a_{n+t-K//2}[:, p]^T``.
  One program owns a (C_out tile, C_in tile, tap) and runs a plain GEMM loop, one dot a step, over
  the (clip, frame, pixel block) steps whose source frame lies in the clip (the out-of-clip frames
  are not in the loop), split into ranges whose fp32 partials (written once each) the host sums in a
  fixed order: deterministic always, so also when ``torch.are_deterministic_algorithms_enabled()``.
  The bias gradient ``dbias[co] = sum_{n, p} dy_n[co, p]`` is one extra program per C_out tile and
  split (``BIAS_GRAD``: dy @ ones on the tensor cores), not a separate pass over dy. Tile choice,
  split and measurements: see ``_DW_PROGRAMS_PER_SM``.
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
from ._tma import _frames_desc, _tma_load, _tma_load_cp, _tma_store, tma_orientation, tma_strides_ok, tma_workspace
from .group_norm_silu import _act_flags, _affine, _launch, _norm_act, _num_sms, _prologue
from .group_norm_silu_backward import norm_act_backward

_GEMM_KEY = ["C_RED", "C_OUT", "HW", "FLAT_X", "FLAT_Y", "PROLOGUE", "SILU", "DTYPE_KEY", "TMA_OK", "X_CL", "Y_CL"]
_DW_KEY = ["C_IN", "C_OUT", "HW", "F", "KT", "NB", "SPLIT", "FLAT_DY", "FLAT_X", "PROLOGUE", "SILU",
           "DTYPE_KEY", "BIAS_GRAD", "TMA_OK", "X_CL", "DY_CL"]


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
              (128, 128, 64, 8, 3, 1), (128, 256, 64, 8, 4, 1), (256, 128, 64, 8, 4, 1),
              (64, 64, 32, 4, 2, 0), (32, 64, 32, 4, 2, 0), (64, 32, 32, 4, 2, 0)]
    return [triton.Config({"BLOCK_P": bp, "BLOCK_CO": bco, "BLOCK_CI": bci, "TMA": tma}, num_warps=w, num_stages=s)
            for bp, bco, bci, w, s, tma in shapes]


def _arg(named_args, kwargs, name):
    return kwargs.get(name, named_args.get(name))


def _family(configs, named_args, kwargs):
    """The configurations of the input dtype's family (BLOCK_CI = 32: fp32, exact CUDA-core dots;
    wider: 16-bit tensor-core tiles) that the tensors allow (TMA=1 only with TMA_OK)."""
    fp32 = _arg(named_args, kwargs, "DTYPE_KEY") == 0
    tma_ok = bool(_arg(named_args, kwargs, "TMA_OK"))
    return [c for c in configs if (c.kwargs["BLOCK_CI"] == 32) == fp32 and (tma_ok or not c.kwargs["TMA"])]


def _fitting(configs, named_args, kwargs, sizes):
    """The configurations none of whose blocks (``sizes``: block name -> size argument) is more
    than the next power of two (at least 64) of its size."""
    caps = {blk: max(64, next_power_of_2(int(_arg(named_args, kwargs, arg)))) for blk, arg in sizes.items()}
    return [c for c in configs if all(c.kwargs[blk] <= cap for blk, cap in caps.items())]


def _gemm_prune(configs, named_args, **kwargs):
    """The dtype's tiles (see _gemm_configs), none much larger than the problem."""
    keep = _family(configs, named_args, kwargs)
    fit = _fitting(keep, named_args, kwargs, {"BLOCK_CO": "C_OUT", "BLOCK_P": "HW"})
    if _arg(named_args, kwargs, "PROLOGUE") or _arg(named_args, kwargs, "SILU"):
        # the prologue runs once per (output-channel block, tap): one block over all of C_out where
        # a tile has room, so each x element is transformed K times
        co_cap = max(64, next_power_of_2(int(_arg(named_args, kwargs, "C_OUT"))))
        wide = [c for c in fit if c.kwargs["BLOCK_CO"] >= min(co_cap, 256)]
        fit = wide or fit
    return fit or keep[:1] or configs[:1]


def _dw_configs():
    """(BLOCK_P, BLOCK_CO, BLOCK_CI, num_warps, num_stages, TMA) of the weight-gradient kernel tried
    on the GPU: 16-bit tensor-core tiles first (the first that the tensors allow is the default when
    TFAA_AUTOTUNE=0), then fp32 (BLOCK_CI = 32, CUDA-core dots). TMA=1 reads dy and x through
    tensor descriptors where they qualify (pruned otherwise). Picked on an H100, bf16 (S12-run 9):
    128-pixel steps of 128 x 128 channel tiles at S2 (0.178 ms through _weight_grad), 64-pixel
    steps of 128 x 128 at 4 stages at S1 (0.270)."""
    shapes = [(64, 128, 128, 8, 3, 1), (128, 128, 128, 8, 3, 1), (64, 128, 256, 8, 3, 1), (64, 128, 64, 8, 3, 1),
              (64, 128, 128, 8, 4, 1), (64, 128, 128, 8, 3, 0), (64, 128, 64, 8, 3, 0), (64, 64, 64, 4, 3, 0),
              (32, 64, 32, 4, 2, 0), (32, 64, 32, 4, 2, 1)]
    return [triton.Config({"BLOCK_P": bp, "BLOCK_CO": bco, "BLOCK_CI": bci, "TMA": tma}, num_warps=w, num_stages=st)
            for bp, bco, bci, w, st, tma in shapes]


def _dw_prune(configs, named_args, **kwargs):
    """The dtype's tiles (see _dw_configs), none much larger than the problem."""
    keep = _family(configs, named_args, kwargs)
    fit = _fitting(keep, named_args, kwargs, {"BLOCK_CO": "C_OUT", "BLOCK_CI": "C_IN", "BLOCK_P": "HW"})
    return fit or keep[:1] or configs[:1]


@triton.jit
def _mma(a, b, acc, IEEE: tl.constexpr):
    """acc + a @ b: exact fp32 ("ieee") dots for fp32 inputs, tensor-core dots otherwise."""
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def _gemm_tile(
    x_ptr, w_ptr, b_ptr, y_ptr, scale_ptr, shift_ptr,
    sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w, sw_t, sw_r, sw_o,
    C_RED, C_OUT, HW, W, F, KT, NB, tile, sub,
    FLAT_X: tl.constexpr, FLAT_Y: tl.constexpr, HAS_BIAS: tl.constexpr,
    PROLOGUE: tl.constexpr, SILU: tl.constexpr, TRANSFORM: tl.constexpr, FAST_SILU: tl.constexpr,
    IEEE: tl.constexpr, USE_TMA: tl.constexpr, X_CL: tl.constexpr, Y_CL: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    """One output tile of :func:`_conv_gemm_kernel`: tile = (frame n, pixel block, output-channel
    block of BLOCK_CO), channel blocks fastest; the program computes its BLOCK_N output channels
    starting at ``sub * BLOCK_N`` inside the block (BLOCK_N = BLOCK_CO: the whole block)."""
    n_co = tl.cdiv(C_OUT, BLOCK_CO)
    n_pb = tl.cdiv(HW, BLOCK_P)
    co_blk = tile % n_co
    rest = tile // n_co
    p_blk = rest % n_pb
    n = (rest // n_pb).to(tl.int64)
    f = (n % F).to(tl.int32)
    pad = KT // 2
    co0 = co_blk * BLOCK_CO + sub * BLOCK_N

    offs_p = p_blk * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_co = co0 + tl.arange(0, BLOCK_N)
    offs_ci = tl.arange(0, BLOCK_CI)
    p_mask = offs_p < HW
    co_mask = offs_co < C_OUT
    if USE_TMA:
        clip = (n // F).to(tl.int32)
        x_desc = _frames_desc(x_ptr, NB, F, C_RED, HW, sx_n, sx_c, sx_w, X_CL, BLOCK_P, BLOCK_CI)
        w_desc = tl.make_tensor_descriptor(w_ptr, [KT, C_RED, C_OUT], [sw_t, sw_r, 1], [1, BLOCK_CI, BLOCK_N])
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
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for it in range(t_lo * n_ci, t_hi * n_ci):
        t = it // n_ci
        ci0 = (it - t * n_ci) * BLOCK_CI
        ci_mask = offs_ci < C_RED - ci0
        if USE_TMA:
            a = _tma_load(x_desc, clip, f + t - pad, p_blk * BLOCK_P, ci0, X_CL, BLOCK_P, BLOCK_CI)
            wt = w_desc.load([t, ci0, co0]).reshape(BLOCK_CI, BLOCK_N)
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
        y_desc = _frames_desc(y_ptr, NB, F, C_OUT, HW, sy_n, sy_c, sy_w, Y_CL, BLOCK_P, BLOCK_N)
        _tma_store(y_desc, clip, f, p_blk * BLOCK_P, co0, acc.to(y_ptr.dtype.element_ty), Y_CL, BLOCK_P, BLOCK_N)
    else:
        y_pix = _pixel_offsets(offs_p, W, sy_h, sy_w, FLAT_Y)
        tl.store(y_ptr + n * sy_n + y_pix[:, None] + offs_co.to(tl.int64)[None, :] * sy_c,
                 acc.to(y_ptr.dtype.element_ty), mask=p_mask[:, None] & co_mask[None, :])


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
    Tiles = (frame n, pixel block, output-channel block), channel blocks fastest so programs that
    share an x tile run together. With TMA (and TMA_OK: x, y and w qualify, see
    tfaa_kernels.triton._tma; X_CL / Y_CL say which axis is contiguous) x, w and y move through
    tensor descriptors of the NB clips (bounds checks and tails by the copy engine).

    Split tail (see ``_tail_tiles``): a grid of ``tiles + extra`` programs runs the first
    ``tiles - extra`` tiles whole, one a program, and each of the last ``extra`` tiles as two
    programs of BLOCK_CO // 2 output channels, so a last, partly filled wave of whole tiles becomes
    a full wave of half tiles. The grid of ``tiles`` programs has no split."""
    pid = tl.program_id(0)
    tiles = tl.cdiv(C_OUT, BLOCK_CO) * tl.cdiv(HW, BLOCK_P) * NB * F
    whole = tiles - (tl.num_programs(0) - tiles)
    USE_TMA: tl.constexpr = TMA and TMA_OK
    if pid < whole:
        _gemm_tile(x_ptr, w_ptr, b_ptr, y_ptr, scale_ptr, shift_ptr,
                   sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w, sw_t, sw_r, sw_o,
                   C_RED, C_OUT, HW, W, F, KT, NB, pid, 0,
                   FLAT_X, FLAT_Y, HAS_BIAS, PROLOGUE, SILU, TRANSFORM, FAST_SILU, IEEE, USE_TMA, X_CL, Y_CL,
                   BLOCK_P, BLOCK_CO, BLOCK_CO, BLOCK_CI)
    else:
        _gemm_tile(x_ptr, w_ptr, b_ptr, y_ptr, scale_ptr, shift_ptr,
                   sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w, sw_t, sw_r, sw_o,
                   C_RED, C_OUT, HW, W, F, KT, NB, whole + (pid - whole) // 2, (pid - whole) % 2,
                   FLAT_X, FLAT_Y, HAS_BIAS, PROLOGUE, SILU, TRANSFORM, FAST_SILU, IEEE, USE_TMA, X_CL, Y_CL,
                   BLOCK_P, BLOCK_CO, BLOCK_CO // 2, BLOCK_CI)


@triton.jit
def _dw_dy_tile(dy_ptr, dy_desc, clip, frame, F, p0, co0, d_tile, offs_pb, co_mask, HW, W, sd_n, sd_h, sd_w,
                FLAT_DY: tl.constexpr, USE_TMA: tl.constexpr, DY_CL: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr):
    """dy[clip * F + frame, co0 + channel block, p0 + pixel block] as a [BLOCK_CO, BLOCK_P] dot operand
    (zeros past C_out and HW). USE_TMA: through the clip descriptor ``dy_desc``."""
    if USE_TMA:
        dy = _tma_load_cp(dy_desc, clip, frame, p0, co0, DY_CL, BLOCK_P, BLOCK_CO)
    else:
        n = clip.to(tl.int64) * F + frame
        if FLAT_DY:
            ptrs = dy_ptr + (n * sd_n + p0.to(tl.int64) * sd_w) + d_tile
        else:
            ptrs = dy_ptr + n * sd_n + d_tile + _pixel_offsets(p0 + offs_pb, W, sd_h, sd_w, False)[None, :]
        dy = tl.load(ptrs, mask=co_mask[:, None] & (offs_pb < HW - p0)[None, :], other=0.0)
    return dy


@triton.jit
def _dw_x_tile(x_ptr, x_desc, scale_ptr, shift_ptr, clip, frame, F, p0, ci0, x_tile, offs_pb, offs_ci, ci_mask,
               HW, W, sx_n, sx_h, sx_w, C_IN,
               FLAT_X: tl.constexpr, PROLOGUE: tl.constexpr, SILU: tl.constexpr, TRANSFORM: tl.constexpr,
               FAST_SILU: tl.constexpr, USE_TMA: tl.constexpr, X_CL: tl.constexpr,
               BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr):
    """act(x[clip * F + frame, ci0 + channel block, p0 + pixel block]) as a [BLOCK_P, BLOCK_CI] dot
    operand (``frame`` lies in the clip; zeros past C_in and HW, also after the prologue)."""
    n_src = clip.to(tl.int64) * F + frame
    m = (offs_pb < HW - p0)[:, None] & ci_mask[None, :]
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
        a = _prologue(a.to(tl.float32), scale_ptr, shift_ptr, n_src, offs_ci, ci_mask, C_IN,
                      PROLOGUE, SILU, FAST_SILU)
        a = tl.where(m, a, 0.0)
    return a.to(x_ptr.dtype.element_ty)


@tunable(_dw_configs(), key=_DW_KEY, prune=_dw_prune)
@triton.jit
def _conv_dw_kernel(
    dy_ptr, x_ptr, scale_ptr, shift_ptr, part_ptr, bpart_ptr,
    sd_n, sd_c, sd_h, sd_w, sx_n, sx_c, sx_h, sx_w, sp_s, sp_o, sp_i, sp_t, sb_s,
    C_IN, C_OUT, HW, W, F, KT, NB, SPLIT,
    FLAT_DY: tl.constexpr, FLAT_X: tl.constexpr,
    PROLOGUE: tl.constexpr, SILU: tl.constexpr, TRANSFORM: tl.constexpr, FAST_SILU: tl.constexpr,
    IEEE: tl.constexpr, DTYPE_KEY: tl.constexpr, BIAS_GRAD: tl.constexpr,
    TMA_OK: tl.constexpr, X_CL: tl.constexpr, DY_CL: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, TMA: tl.constexpr,
):
    """part[s, co, ci, t] = sum over split s of tap t's steps of dy[n, co, p] * act(x[n + t - KT//2, ci, p]);
    with BIAS_GRAD also bpart[s, co] = sum over split s of the centre tap's steps of dy[n, co, p].

    Grid: (C_out tiles x (C_in tiles x KT taps [+ 1 bias program]), SPLIT); C_out tiles vary fastest.
    A program owns one (C_out tile, C_in tile, tap) and runs one GEMM K-loop over the tap's steps =
    (clip, frame n, pixel block) with n + t - KT//2 inside the clip (the out-of-clip frames are not
    in the loop: never read, no zero MMAs), split into SPLIT contiguous ranges. One dot a step.

    The bias program of a C_out tile (the extra index KT * n_ci, only with BIAS_GRAD) walks the centre
    tap's steps (every frame) and accumulates ``dy @ ones`` into a (BLOCK_CO, 16) fp32 tile (every
    column the row sum; column 0 is stored), on the tensor cores like the GEMM, not with ``tl.sum``
    (a cross-warp reduction inside a pipelined tensor-core loop corrupted dW on the H100, S3).

    TMA (with TMA_OK: dy and x qualify, see tfaa_kernels.triton._tma): the tiles come through
    descriptors over the NB clips (the copy engine fills channel and pixel tails with zeros)."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n_co = tl.cdiv(C_OUT, BLOCK_CO)
    n_ci = tl.cdiv(C_IN, BLOCK_CI)
    co_blk = pid % n_co
    j = pid // n_co
    bias_prog = j == KT * n_ci  # never true without BIAS_GRAD (the grid has no such program then)
    pad = KT // 2
    t = tl.where(bias_prog, pad, j // n_ci)
    ci_blk = j % n_ci
    shift = t - pad
    # the frames n whose source frame n + shift lies in [0, F)
    f_lo = tl.maximum(-shift, 0)
    nf = tl.maximum(tl.minimum(F, F - shift) - f_lo, 0)
    n_pb = tl.cdiv(HW, BLOCK_P)
    steps = NB * nf * n_pb
    per = tl.cdiv(steps, SPLIT)
    start = tl.minimum(s * per, steps)
    end = tl.minimum(steps, start + per)

    offs_co = co_blk * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_ci = ci_blk * BLOCK_CI + tl.arange(0, BLOCK_CI)
    co_mask = offs_co < C_OUT
    ci_mask = offs_ci < C_IN
    offs_pb = tl.arange(0, BLOCK_P)
    co0 = co_blk * BLOCK_CO
    ci0 = ci_blk * BLOCK_CI
    USE_TMA: tl.constexpr = TMA and TMA_OK
    if USE_TMA:
        dy_desc = _frames_desc(dy_ptr, NB, F, C_OUT, HW, sd_n, sd_c, sd_w, DY_CL, BLOCK_P, BLOCK_CO)
        x_desc = _frames_desc(x_ptr, NB, F, C_IN, HW, sx_n, sx_c, sx_w, X_CL, BLOCK_P, BLOCK_CI)
        d_tile = 0
        x_tile = 0
    else:
        dy_desc = dy_ptr  # not read
        x_desc = x_ptr
        # int64 tile offsets of pixel block 0 (the pixel part only when the pixels have one flat stride)
        d_tile = offs_co.to(tl.int64)[:, None] * sd_c
        x_tile = offs_ci.to(tl.int64)[None, :] * sx_c
        if FLAT_DY:
            d_tile += _pixel_offsets(offs_pb, W, sd_h, sd_w, FLAT_DY)[None, :]
        if FLAT_X:
            x_tile += _pixel_offsets(offs_pb, W, sx_h, sx_w, FLAT_X)[:, None]

    # Two loops at the top level, each empty for the other kind of program (a runtime `if` around
    # them kept the GEMM loop from running at the probe's speed)
    acc = tl.zeros((BLOCK_CO, BLOCK_CI), dtype=tl.float32)
    for i in range(start, tl.where(bias_prog, start, end)):
        pb = i % n_pb
        r = i // n_pb
        clip = r // nf
        n_f = f_lo + r % nf
        p0 = pb * BLOCK_P
        dy = _dw_dy_tile(dy_ptr, dy_desc, clip, n_f, F, p0, co0, d_tile, offs_pb, co_mask, HW, W,
                         sd_n, sd_h, sd_w, FLAT_DY, USE_TMA, DY_CL, BLOCK_P, BLOCK_CO)
        a = _dw_x_tile(x_ptr, x_desc, scale_ptr, shift_ptr, clip, n_f + shift, F, p0, ci0, x_tile, offs_pb,
                       offs_ci, ci_mask, HW, W, sx_n, sx_h, sx_w, C_IN, FLAT_X, PROLOGUE, SILU,
                       TRANSFORM, FAST_SILU, USE_TMA, X_CL, BLOCK_P, BLOCK_CI)
        acc = _mma(dy, a, acc, IEEE)
    out = (part_ptr + s.to(tl.int64) * sp_s + offs_co.to(tl.int64)[:, None] * sp_o
           + offs_ci.to(tl.int64)[None, :] * sp_i + t.to(tl.int64) * sp_t)
    tl.store(out, acc, mask=(co_mask[:, None] & ci_mask[None, :]) & (j < KT * n_ci))
    if BIAS_GRAD:
        # bias gradient: dy @ ones on the tensor cores, every column of bacc is the row sum of dy
        bacc = tl.zeros((BLOCK_CO, 16), dtype=tl.float32)
        ones = tl.full((BLOCK_P, 16), 1.0, dtype=dy_ptr.dtype.element_ty)
        for i in range(start, tl.where(bias_prog, end, start)):
            pb = i % n_pb
            r = i // n_pb
            dy = _dw_dy_tile(dy_ptr, dy_desc, r // nf, f_lo + r % nf, F, pb * BLOCK_P, co0, d_tile, offs_pb,
                             co_mask, HW, W, sd_n, sd_h, sd_w, FLAT_DY, USE_TMA, DY_CL, BLOCK_P, BLOCK_CO)
            bacc = _mma(dy, ones, bacc, IEEE)
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


# Split tail of the GEMM grid. On an H100 the S2 forward (32 frames x 2 pixel blocks x 5 channel
# blocks = 320 tiles of 128 x 256, one program an SM) ran 3 waves on 132 SMs, the last 42% full:
# at the kernel's per-tile rate the tiles alone would take 2.42/3 of its 0.140 ms, the 0.112 ms
# of cuBLAS at the same FLOPs. Tiles of at least _SPLIT_MIN_TILE outputs (128 x 256: one program
# an SM, its fp32 accumulator alone 128 registers a thread at 8 warps) count one slot an SM; the
# last wave, when at most half full, runs as twice as many half-width programs. Measured (S14-run
# 1, GPU time, forced 128 x 256 TMA tile): S2 GEMM 141.6 -> 130.5 us (a half-width program takes
# ~3/4 of a whole one's time, not 1/2); op forward 0.153 -> 0.141 ms NCHW, 0.152 -> 0.140 CL.
# S1 and 32x32 C640 (last waves 84 of 132 and 112 of 132) have no split.
_SPLIT_MIN_TILE = 128 * 256
_INTERP_SLOTS: Optional[int] = None  # interpreter: slots of the split-tail rule (None: no split)


def _gemm_slots(device: torch.device, meta) -> int:
    """Programs of ``meta``'s tile shape that run at once (0: unknown, no split tail)."""
    if meta["BLOCK_CO"] < 32:
        return 0
    if triton_interpret():
        return _INTERP_SLOTS or 0
    if meta["BLOCK_P"] * meta["BLOCK_CO"] < _SPLIT_MIN_TILE:
        return 0
    return _num_sms(device)


def _tail_tiles(tiles: int, slots: int) -> int:
    """How many of the last ``tiles`` to run as two half-width programs each: the last wave's
    tiles when ``slots`` programs run at once and that wave is at most half full, else 0."""
    if slots <= 0:
        return 0
    rem = tiles % slots
    return rem if 2 * rem <= slots else 0


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
        tiles = cdiv(c_out, m["BLOCK_CO"]) * cdiv(h * w, m["BLOCK_P"]) * n
        return (tiles + _tail_tiles(tiles, _gemm_slots(x.device, m)),)

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


# Weight gradient (bf16/fp16; S2 = B2 F16 C1280 16x16 K3: dW is a GEMM (C_out) x (K*C_in) = 1280 x 3840
# reduced over B*F*H*W = 8192 pixels, 80.5 GFLOP, the same as the forward). One program per (C_out
# tile, C_in tile, tap) with one dot a loop step, as in a plain GEMM. The kernel this replaced held
# all K taps of a 128 x 64 channel tile in one program (K accumulators, three dots a step, the dy
# tile shared by the taps, the bias row sums a fourth dot) to cut L2 traffic, and reached 2.4 TFLOP/s
# an SM (S2 0.33 ms, S9). A probe of the one-tap loop (S12-run 1, GPU time) ran S2 in 0.164 ms
# (128 x 128 tiles, 128-pixel steps, one split: 300 programs), 32x32 C640 in 0.164 and S1 in 0.255;
# through _weight_grad with the bias programs and _dw_finish_kernel (S12-run 9, autotuned, bf16 dW
# out): S2 0.178 ms, S1 0.270 (NCHW; the old kernel and its fp32 -> bf16 cast 0.33 and 0.29).
# The bias gradient is one extra light program per C_out tile and split (dy @ ones): no second
# pass over dy.
# Split: each tap's steps (clip, frame, pixel block) are cut into SPLIT ranges whose fp32 partials
# (written once each) the host sums in a fixed order, so the result is deterministic always. The
# split fills one wave of _DW_PROGRAMS_PER_SM programs an SM, counted at 128 x 128 tiles; at S1
# (30 programs a split) that is 8 splits. Probe (S12-run 1): a second, partly filled wave costs more
# than it gives (32x32 C640: split 3 = 225 programs 0.164 ms, 4 = 300 programs 0.234).
_DW_PROGRAMS_PER_SM = 2  # the 128 x 128 x 64-pixel tile (96 KB of shared memory at 3 stages): two an SM
_INTERP_DW = {"BLOCK_P": 16, "BLOCK_CO": 16, "BLOCK_CI": 16, "TMA": 1, "SPLIT": 4}


def _dw_split(c_out: int, c_in: int, kt: int, steps: int, bias_grad: bool, sms: int) -> int:
    """Number of splits of each tap's ``steps``: the most that keep the programs (counted at
    128 x 128 channel tiles, plus the bias programs) in one wave of _DW_PROGRAMS_PER_SM programs an
    SM; at least 1, at most ``steps``."""
    n_co = cdiv(c_out, 128)
    programs = n_co * (cdiv(c_in, 128) * kt + int(bias_grad))
    return max(1, min(steps, _DW_PROGRAMS_PER_SM * sms // programs))


@triton.jit
def _dw_finish_kernel(part_ptr, out_ptr, C_OUT, C_IN, KT, SPLIT, sp_s, sp_t, sp_o,
                      KP: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr):
    """out[co, ci, t] = sum_{s < SPLIT} part[s, t, co, ci] in the order s = 0, 1, ... (fp32), cast to
    out's dtype; part (SPLIT, KT, C_OUT, C_IN) with unit C_IN stride, out contiguous (C_OUT, C_IN, KT).
    A program owns a [BLOCK_CO, BLOCK_CI, KP] tile (KP = KT rounded up to a power of two, masked):
    the loads run along C_IN in each tap plane, the stores along the (ci, t) rows of dW, whole
    sectors (Triton moves the tile between the two layouts through shared memory). The one-tap GEMM
    programs storing straight into the tap-interleaved dW (stride K) took ~100 us for the S2 weight
    (9.8 MB) on an H100; this kernel 21 us (S12-runs 6, 8)."""
    co = (tl.program_id(0) * BLOCK_CO + tl.arange(0, BLOCK_CO))[:, None, None]
    ci = (tl.program_id(1) * BLOCK_CI + tl.arange(0, BLOCK_CI))[None, :, None]
    t = tl.arange(0, KP)[None, None, :]
    mask = (co < C_OUT) & (ci < C_IN) & (t < KT)
    src = part_ptr + co.to(tl.int64) * sp_o + t.to(tl.int64) * sp_t + ci
    acc = tl.load(src, mask=mask, other=0.0)
    for _ in range(1, SPLIT):
        src += sp_s  # 64-bit pointers: no int32 product s * sp_s
        acc += tl.load(src, mask=mask, other=0.0)
    out = out_ptr + (co.to(tl.int64) * C_IN + ci) * KT + t
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _weight_grad(dy: torch.Tensor, x: torch.Tensor, kt: int, num_frames: int, out_dtype: torch.dtype,
                 scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                 silu: bool = False, bias_grad: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(dW (C_out, C_in, K) contiguous in ``out_dtype``, dbias (C_out,) fp32 or None without
    ``bias_grad``), from ``_conv_dw_kernel``'s split partials (part (split, K, C_out, C_in), bpart
    (split, C_out)) summed over the splits in a fixed order (deterministic). dy: (N, C_out, H, W), x: (N, C_in, H, W), any
    strides; with ``scale``/``shift`` (N, C_in) fp32 the kernel convolves act(x * scale + shift)."""
    n, c_in, h, w = x.shape
    c_out = dy.shape[1]
    hw = h * w
    nb = n // num_frames
    kernel, meta = _forced(_conv_dw_kernel, _DW_FORCE)
    if triton_interpret():
        meta = dict(_INTERP_DW)
        split = meta.pop("SPLIT")
    else:
        sms = _num_sms(x.device)
        split = _dw_split(c_out, c_in, kt, nb * num_frames * cdiv(hw, 64), bias_grad, sms)
    # (split, tap, C_out, C_in): a program's partial is BLOCK_CO contiguous rows (tap-interleaved
    # (C_out, C_in, K) stores from one-tap programs were slow, S12-runs 4-6); _dw_finish_kernel sums them
    part = torch.empty((split, kt, c_out, c_in), dtype=torch.float32, device=x.device)
    bpart = empty((split, c_out), torch.float32, x.device) if bias_grad else part  # part: not written
    sd_h, sd_w, flat_d = _pixel_strides(dy)
    sx_h, sx_w, flat_x = _pixel_strides(x)
    prologue = scale is not None
    x_cl, dy_cl = tma_orientation(x, num_frames), tma_orientation(dy, num_frames)
    tma_ok = x_cl is not None and dy_cl is not None

    def grid(m):
        return (cdiv(c_out, m["BLOCK_CO"]) * (cdiv(c_in, m["BLOCK_CI"]) * kt + int(bias_grad)), split)

    def launch():
        _launch(kernel, grid, (
            dy, x, scale if prologue else x, shift if prologue else x, part, bpart,
            dy.stride(0), dy.stride(1), sd_h, sd_w, x.stride(0), x.stride(1), sx_h, sx_w,
            part.stride(0), part.stride(2), part.stride(3), part.stride(1), bpart.stride(0),
            c_in, c_out, hw, w, num_frames, kt, nb, split),
            dict(FLAT_DY=flat_d, FLAT_X=flat_x, **_act_flags(x, prologue, silu),
                 IEEE=_ieee(x), DTYPE_KEY=_dtype_key(x), BIAS_GRAD=bias_grad, TMA_OK=tma_ok,
                 X_CL=bool(x_cl), DY_CL=bool(dy_cl), **meta))
    tma_workspace(x.device, launch, needed=tma_ok)
    dw = empty((c_out, c_in, kt), out_dtype, x.device)
    if dw.numel():
        _dw_finish_kernel[(cdiv(c_out, 4), cdiv(c_in, 128))](
            part, dw, c_out, c_in, kt, split, part.stride(0), part.stride(1), part.stride(2),
            KP=next_power_of_2(kt), BLOCK_CO=4, BLOCK_CI=128, num_warps=4)
    if not bias_grad:
        return dw, None
    return dw, bpart[0] if split == 1 else bpart.sum(0)


@triton.jit
def _tap_major_kernel(w_ptr, out_ptr, C_OUT, C_IN, KT, so_t, so_o, so_i,
                      FLIP: tl.constexpr, TAPS_IN_TILE: tl.constexpr, KP: tl.constexpr,
                      BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr):
    """out[t', co, ci] = w[co, ci, t] (w contiguous (C_OUT, C_IN, KT); out through its strides;
    t' = KT-1-t with FLIP). One (co, ci) tile per program, all taps: TAPS_IN_TILE moves them as one
    [BLOCK_CO, BLOCK_CI, KP] tile (KP = next power of two >= KT; one contiguous read), else one
    [BLOCK_CO, BLOCK_CI] tile per tap (reads with stride KT). Triton stages a tile through shared
    memory when the store's contiguous axis differs from the load's."""
    co = tl.program_id(0) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    ci = tl.program_id(1) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    mask = (co < C_OUT)[:, None] & (ci < C_IN)[None, :]
    src = w_ptr + (co.to(tl.int64)[:, None] * C_IN + ci[None, :]) * KT
    dst = out_ptr + co.to(tl.int64)[:, None] * so_o + ci.to(tl.int64)[None, :] * so_i
    if TAPS_IN_TILE:
        t = tl.arange(0, KP)
        tt = KT - 1 - t if FLIP else t
        mask3 = mask[:, :, None] & (t < KT)[None, None, :]
        tl.store(dst[:, :, None] + tt[None, None, :] * so_t, tl.load(src[:, :, None] + t[None, None, :], mask=mask3),
                 mask=mask3)
    else:
        for t in range(0, KT):
            tt = KT - 1 - t if FLIP else t
            tl.store(dst + tt * so_t, tl.load(src + t, mask=mask), mask=mask)


# (taps in one tile, BLOCK_CO, BLOCK_CI) per packed layout, H100 bf16 (S13-run 1, do_bench medians,
# us, for weights (1280, 1280, 3) / (320, 320, 3) / (1280, 1280, 5)): the forward's (K, C_in, C_out)
# per tap with 32 x 32 tiles, 13.6 / 6.3 / 19.5 (the whole tile: 15.3 / 5.4 / 22.2; a clone of the
# S2 weight takes 11.8); the input gradient's (K, C_out, C_in) as one 16 x 64 x KP tile, 13.7 / 5.4 /
# 22.1 (per tap: 28.3 / 6.9 / 47.0).
_TAP_MAJOR_TILES = {(0, 2, 1): (False, 32, 32), (0, 1, 2): (True, 16, 64)}


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
    taps_in_tile, bco, bci = _TAP_MAJOR_TILES.get(tuple(perm), (False, 32, 32))
    if out.numel():
        grid = (cdiv(c_out, bco), cdiv(c_in, bci))
        _tap_major_kernel[grid](w, out, c_out, c_in, kt, *strides, FLIP=flip, TAPS_IN_TILE=taps_in_tile,
                                KP=next_power_of_2(kt), BLOCK_CO=bco, BLOCK_CI=bci)
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
    dw, db = _weight_grad(dy, x, weight.shape[2], num_frames, weight.dtype, bias_grad=need_bias_grad)
    return dx, dw, _bias_grad(db, weight)


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
        dw, db = _weight_grad(dy, _norm_act(x, scale, shift, silu), weight.shape[2], num_frames, weight.dtype,
                              bias_grad=need_bias_grad)
    else:
        dw, db = _weight_grad(dy, x, weight.shape[2], num_frames, weight.dtype, scale, shift, silu,
                              bias_grad=need_bias_grad)
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
