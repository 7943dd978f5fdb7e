"""Triton kernels of first-adjacent attention, mode="spatial" (DESIGN.md §1a).

Frame ``f``'s L queries attend to the 2L keys ``concat(k[prev(f)], k[0])`` of its clip,
``prev(f) = max(f-1, 0)``. FlashAttention-2 style: a program owns one query tile of one frame and
head and streams the key/value tiles of frame ``prev(f)`` and then frame 0 straight from q/k/v
through their strides (views of a packed qkv projection work as they are; nothing is concatenated
or copied), with an online softmax in fp32 (exp2, ``log2(e)`` folded into the scale). Offsets are
int64. The head dim runs as one or two power-of-two column chunks with masked loads
(:func:`head_split`: 40 -> 32+16, 80 -> 64+16, 160 -> 128+32), not padded to the next power of two.

Duplicate keys. Frames 0 and 1 see frame 0's keys twice. Softmax over a key set repeated twice
equals softmax over one copy, and the log-sum-exp grows by ``ln 2``; so those frames stream frame 0
once and add ``ln 2`` to the saved LSE. With that LSE every probability recomputed in the backward
is the duplicated-set one (half the single-copy one) and is counted with weight 2 (both copies).

Layouts: q, k, v, dout ``(B*F, L, H, D)`` with ``stride(-1) == 1``; out, dq, dk, dv
``(B*F, L, H, D)`` contiguous; ``lse`` and ``delta`` ``(B*F, H, L)`` fp32 contiguous (natural-log
LSE of the scaled scores; ``delta = rowsum(dout * out)``).

Backward (one launch after the small delta pass), no atomics, so bitwise deterministic:
- dk/dv programs own one key tile of key frame ``g`` and loop over every query frame that reads it:
  frame 0 is read by all F query frames (weight 2 for frames 0 and 1), frame ``g >= 1`` only by
  frame ``g+1``, the last frame by nobody (zero gradient). Sums stay in fp32 registers and are
  written once. Frame-0 programs (F times the work of the others) come first in launch order, so
  the longest programs start first and the short ones fill the machine behind them.
- dq programs own one query tile and stream the same key tiles as the forward.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._alloc import empty
from ..backends import register_impl, triton_interpret
from ._host import cdiv, next_power_of_2
from ._autotune import tunable


# ----------------------------------------------------------------- configs
def _fwd_configs():
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) tried on the GPU. 128x64 and 128x128 query x key
    tiles with 4-8 warps and 3 stages are the usual Hopper choices of FA2-style Triton kernels for
    head dims <= 128; 64x64 / 64x32 fit registers and shared memory at D = 160..256 (and are the
    only ones kept for fp32)."""
    shapes = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2),
              (32, 32, 4, 1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in shapes]


def _bwd_configs():
    """(BLOCK_HELD, BLOCK_ITER, num_warps, num_stages): the tile a program keeps in registers (keys
    in the dk/dv part, queries in the dq part) and the tile it streams. A tall held tile and a thin
    streamed one (128x32, as in the FA2 Triton tutorial) keeps the fp32 accumulators resident and
    the streamed loads small; 8 warps hold the larger accumulators of D = 80..160; 64x32 is the
    fallback for D = 256 and fp32."""
    shapes = [(128, 32, 4, 3), (128, 32, 8, 3), (128, 64, 8, 2), (64, 32, 4, 2), (32, 32, 4, 1)]
    return [triton.Config({"BLOCK_HELD": m, "BLOCK_ITER": n}, num_warps=w, num_stages=s)
            for m, n, w, s in shapes]


def _prune(configs, named_args, **kwargs):
    """Keep the tiles that fit the dtype: 16-bit inputs use the tensor-core tiles (>= 64x32);
    fp32 inputs use exact ("ieee") dots on CUDA cores with fp32 operands, so only small tiles
    (<= 64x64), and for head dims > 128 only the single-stage 32x32 tile fits shared memory."""
    d = kwargs.get("D", named_args.get("D", 0))

    def area(c):
        return math.prod(v for k, v in c.kwargs.items() if k.startswith("BLOCK"))
    if named_args.get("DTYPE_KEY", 1) != 0:
        keep = [c for c in configs if area(c) >= 64 * 32]
    elif d > 128:
        keep = [c for c in configs if area(c) <= 32 * 32]
    else:
        keep = [c for c in configs if 32 * 32 < area(c) <= 64 * 64]
    return keep or configs[-1:]


_KEY = ["L", "H", "D", "DTYPE_KEY"]
_INTERP_FWD = {"BLOCK_M": 16, "BLOCK_N": 16}
_INTERP_BWD = {"BLOCK_HELD": 16, "BLOCK_ITER": 16}


# ----------------------------------------------------------------- shared helpers
# The head dim is split into two power-of-two column chunks, [0, BLOCK_D0) and
# [BLOCK_D0, BLOCK_D0 + BLOCK_D1) (the second only if HAS_D1), so SD's D = 40, 80, 160 run as
# 32+16, 64+16, 128+32 instead of padding to 64, 128, 256: every dot over the head dim is the sum
# (or pair) of two dots. Columns >= D are masked to zero.
@triton.jit
def _ptrs(base, row0, n_rows, stride_row, col0, n_cols, BLOCK_R: tl.constexpr,
          BLOCK_C: tl.constexpr):
    """Pointers (int64 offsets) and mask of the [BLOCK_R, BLOCK_C] tile at (row0, col0) of one
    (frame, head) slice whose rows are ``stride_row`` apart and whose channels are contiguous."""
    rows = row0 + tl.arange(0, BLOCK_R)
    cols = col0 + tl.arange(0, BLOCK_C)
    ptrs = base + rows.to(tl.int64)[:, None] * stride_row + cols[None, :]
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    return ptrs, mask


@triton.jit
def _load_split(base, row0, n_rows, stride_row, D: tl.constexpr, BLOCK_R: tl.constexpr,
                BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr, HAS_D1: tl.constexpr):
    """The two column chunks [BLOCK_R, BLOCK_D0], [BLOCK_R, BLOCK_D1] of a row tile, zero-padded
    (the second is a dead zero tile when not HAS_D1)."""
    p0, m0 = _ptrs(base, row0, n_rows, stride_row, 0, D, BLOCK_R, BLOCK_D0)
    t0 = tl.load(p0, mask=m0, other=0.0)
    if HAS_D1:
        p1, m1 = _ptrs(base, row0, n_rows, stride_row, BLOCK_D0, D, BLOCK_R, BLOCK_D1)
        t1 = tl.load(p1, mask=m1, other=0.0)
    else:
        t1 = tl.zeros([BLOCK_R, BLOCK_D1], dtype=t0.dtype)
    return t0, t1


@triton.jit
def _store_split(base, row0, n_rows, stride_row, t0, t1, D: tl.constexpr, BLOCK_R: tl.constexpr,
                 BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr, HAS_D1: tl.constexpr):
    """Store the two column chunks of a row tile (cast to the destination dtype)."""
    ty = base.dtype.element_ty
    p0, m0 = _ptrs(base, row0, n_rows, stride_row, 0, D, BLOCK_R, BLOCK_D0)
    tl.store(p0, t0.to(ty), mask=m0)
    if HAS_D1:
        p1, m1 = _ptrs(base, row0, n_rows, stride_row, BLOCK_D0, D, BLOCK_R, BLOCK_D1)
        tl.store(p1, t1.to(ty), mask=m1)


@triton.jit
def _dot_nt(a0, a1, b0, b1, HAS_D1: tl.constexpr, PREC: tl.constexpr):
    """a @ b^T over the head dim (both chunks), fp32: [R, C] from a [R, D] and b [C, D]."""
    s = tl.dot(a0, tl.trans(b0), input_precision=PREC)
    if HAS_D1:
        s = tl.dot(a1, tl.trans(b1), s, input_precision=PREC)
    return s


@triton.jit
def _row_vec(base, row0, n_rows, other, BLOCK_R: tl.constexpr):
    """A [BLOCK_R] fp32 slice of an (B*F, H, L) row (lse or delta), ``other`` past the end."""
    rows = row0 + tl.arange(0, BLOCK_R)
    return tl.load(base + rows, mask=rows < n_rows, other=other)


# ----------------------------------------------------------------- forward
@triton.jit
def _fwd_stream(acc0, acc1, m_i, l_i, q0, q1, k_base, v_base, sk_l, sv_l, n_keys, qk_scale,
                D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D0: tl.constexpr,
                BLOCK_D1: tl.constexpr, HAS_D1: tl.constexpr, PREC: tl.constexpr,
                EVEN_L: tl.constexpr):
    """Online-softmax update of (acc0/acc1 [M, BLOCK_D0/1], m_i [M], l_i [M]) with the first
    ``n_keys`` keys of one frame (0 or L). Scores are in log2 units (``qk_scale`` has log2(e)).
    EVEN_L: every key tile is full, no score mask."""
    for n0 in range(0, n_keys, BLOCK_N):
        k0, k1 = _load_split(k_base, n0, n_keys, sk_l, D, BLOCK_N, BLOCK_D0, BLOCK_D1, HAS_D1)
        s = _dot_nt(q0, q1, k0, k1, HAS_D1, PREC) * qk_scale
        if not EVEN_L:
            cols = n0 + tl.arange(0, BLOCK_N)
            s = tl.where((cols < n_keys)[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v0, v1 = _load_split(v_base, n0, n_keys, sv_l, D, BLOCK_N, BLOCK_D0, BLOCK_D1, HAS_D1)
        p = p.to(v0.dtype)
        acc0 = tl.dot(p, v0, acc0 * alpha[:, None], input_precision=PREC)
        if HAS_D1:
            acc1 = tl.dot(p, v1, acc1 * alpha[:, None], input_precision=PREC)
        m_i = m_new
    return acc0, acc1, m_i, l_i


@tunable(_fwd_configs(), key=_KEY, prune=_prune)
@triton.jit
def _spatial_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h, so_n, so_l, so_h,
    L, H, F, scale, DTYPE_KEY,
    D: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr, HAS_D1: tl.constexpr,
    PREC: tl.constexpr, EVEN_L: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # program -> (row n = b*F + f, head h, query block); query blocks of one (n, h) are adjacent so
    # they share the K/V tiles in L2.
    n_mb = tl.cdiv(L, BLOCK_M)
    pid = tl.program_id(0)
    m0 = (pid % n_mb) * BLOCK_M
    nh = pid // n_mb
    h = (nh % H).to(tl.int64)
    n = (nh // H).to(tl.int64)
    f = n % F
    first = n - f
    prev = first + tl.maximum(f - 1, 0)

    q0, q1 = _load_split(q_ptr + n * sq_n + h * sq_h, m0, L, sq_l, D, BLOCK_M, BLOCK_D0,
                         BLOCK_D1, HAS_D1)
    qk_scale = scale * 1.4426950408889634
    acc0 = tl.zeros([BLOCK_M, BLOCK_D0], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_M, BLOCK_D1], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    # frames 0 and 1: prev(f) == 0, the duplicate copy is folded into the LSE below
    n_prev = tl.where(f >= 2, L, 0)
    acc0, acc1, m_i, l_i = _fwd_stream(acc0, acc1, m_i, l_i, q0, q1, k_ptr + prev * sk_n + h * sk_h,
                                       v_ptr + prev * sv_n + h * sv_h, sk_l, sv_l, n_prev, qk_scale,
                                       D, BLOCK_N, BLOCK_D0, BLOCK_D1, HAS_D1, PREC, EVEN_L)
    acc0, acc1, m_i, l_i = _fwd_stream(acc0, acc1, m_i, l_i, q0, q1, k_ptr + first * sk_n + h * sk_h,
                                       v_ptr + first * sv_n + h * sv_h, sk_l, sv_l, L, qk_scale,
                                       D, BLOCK_N, BLOCK_D0, BLOCK_D1, HAS_D1, PREC, EVEN_L)

    inv_l = 1.0 / l_i[:, None]
    _store_split(o_ptr + n * so_n + h * so_h, m0, L, so_l, acc0 * inv_l, acc1 * inv_l,
                 D, BLOCK_M, BLOCK_D0, BLOCK_D1, HAS_D1)
    dup = tl.where(f <= 1, 1.0, 0.0)
    lse = (m_i + tl.log2(l_i) + dup) * 0.6931471805599453
    rows = m0 + tl.arange(0, BLOCK_M)
    tl.store(lse_ptr + (n * H + h) * L + rows, lse, mask=rows < L)


# ----------------------------------------------------------------- backward
@triton.jit
def _delta_kernel(o_ptr, do_ptr, delta_ptr, so_n, so_l, so_h, sdo_n, sdo_l, sdo_h, L, H,
                  D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta[n, h, l] = sum_d out[n, l, h, d] * dout[n, l, h, d] in fp32."""
    n_mb = tl.cdiv(L, BLOCK_M)
    pid = tl.program_id(0)
    m0 = (pid % n_mb) * BLOCK_M
    nh = (pid // n_mb).to(tl.int64)
    h = nh % H
    n = nh // H
    o_ptrs, mask = _ptrs(o_ptr + n * so_n + h * so_h, m0, L, so_l, 0, D, BLOCK_M, BLOCK_D)
    do_ptrs, _ = _ptrs(do_ptr + n * sdo_n + h * sdo_h, m0, L, sdo_l, 0, D, BLOCK_M, BLOCK_D)
    o = tl.load(o_ptrs, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(do_ptrs, mask=mask, other=0.0).to(tl.float32)
    rows = m0 + tl.arange(0, BLOCK_M)
    tl.store(delta_ptr + nh * L + rows, tl.sum(o * do, axis=1), mask=rows < L)


@triton.jit
def _dkdv_program(pid, do_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                  sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
                  sg_n, sg_l, sg_h, L, H, F, n_clips, qk_scale, scale,
                  D: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr,
                  HAS_D1: tl.constexpr, PREC: tl.constexpr,
                  BLOCK_HELD: tl.constexpr, BLOCK_ITER: tl.constexpr):
    """dk, dv of one key tile: key frame ``g``, head ``h``, rows ``k0..k0+BLOCK_HELD``.
    pid -> (key block fastest, head, clip, key frame g slowest): frame-0 programs launch first."""
    n_kb = tl.cdiv(L, BLOCK_HELD)
    k0 = (pid % n_kb) * BLOCK_HELD
    r = pid // n_kb
    h = (r % H).to(tl.int64)
    r = r // H
    clip = (r % n_clips).to(tl.int64) * F
    g = r // n_clips
    kn = clip + g

    ka, kb = _load_split(k_ptr + kn * sk_n + h * sk_h, k0, L, sk_l, D, BLOCK_HELD, BLOCK_D0,
                         BLOCK_D1, HAS_D1)
    va, vb = _load_split(v_ptr + kn * sv_n + h * sv_h, k0, L, sv_l, D, BLOCK_HELD, BLOCK_D0,
                         BLOCK_D1, HAS_D1)
    dka = tl.zeros([BLOCK_HELD, BLOCK_D0], dtype=tl.float32)
    dkb = tl.zeros([BLOCK_HELD, BLOCK_D1], dtype=tl.float32)
    dva = tl.zeros([BLOCK_HELD, BLOCK_D0], dtype=tl.float32)
    dvb = tl.zeros([BLOCK_HELD, BLOCK_D1], dtype=tl.float32)

    # readers of key frame g: all frames if g == 0, else frame g+1 (none for the last frame)
    f_lo = tl.where(g == 0, 0, g + 1)
    f_hi = tl.where(g == 0, F, tl.minimum(g + 2, F))
    n_qb = tl.cdiv(L, BLOCK_ITER)
    n_iter = tl.maximum(f_hi - f_lo, 0) * n_qb
    for t in range(0, n_iter):
        f = f_lo + t // n_qb
        m0 = (t % n_qb) * BLOCK_ITER
        qn = clip + f
        qa, qb = _load_split(q_ptr + qn * sq_n + h * sq_h, m0, L, sq_l, D, BLOCK_ITER, BLOCK_D0,
                             BLOCK_D1, HAS_D1)
        doa, dob = _load_split(do_ptr + qn * sdo_n + h * sdo_h, m0, L, sdo_l, D, BLOCK_ITER,
                               BLOCK_D0, BLOCK_D1, HAS_D1)
        row = (qn * H + h) * L
        lse2 = _row_vec(lse_ptr + row, m0, L, float("inf"), BLOCK_ITER) * 1.4426950408889634
        delta = _row_vec(delta_ptr + row, m0, L, 0.0, BLOCK_ITER)
        # frames 0 and 1 read frame 0 twice (as prev and as first): both copies count
        w = tl.where(f <= 1, 2.0, 1.0)
        s_t = _dot_nt(ka, kb, qa, qb, HAS_D1, PREC) * qk_scale                 # [HELD, ITER]
        p_t = tl.exp2(s_t - lse2[None, :]) * w
        dp_t = _dot_nt(va, vb, doa, dob, HAS_D1, PREC)
        ds_t = (p_t * (dp_t - delta[None, :])).to(qa.dtype)
        p_t = p_t.to(doa.dtype)
        dva = tl.dot(p_t, doa, dva, input_precision=PREC)
        dka = tl.dot(ds_t, qa, dka, input_precision=PREC)
        if HAS_D1:
            dvb = tl.dot(p_t, dob, dvb, input_precision=PREC)
            dkb = tl.dot(ds_t, qb, dkb, input_precision=PREC)

    _store_split(dk_ptr + kn * sg_n + h * sg_h, k0, L, sg_l, dka * scale, dkb * scale,
                 D, BLOCK_HELD, BLOCK_D0, BLOCK_D1, HAS_D1)
    _store_split(dv_ptr + kn * sg_n + h * sg_h, k0, L, sg_l, dva, dvb,
                 D, BLOCK_HELD, BLOCK_D0, BLOCK_D1, HAS_D1)


@triton.jit
def _dq_program(pid, do_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, dq_ptr,
                sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
                sg_n, sg_l, sg_h, L, H, F, qk_scale, scale,
                D: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr,
                HAS_D1: tl.constexpr, PREC: tl.constexpr, EVEN_L: tl.constexpr,
                BLOCK_HELD: tl.constexpr, BLOCK_ITER: tl.constexpr):
    """dq of one query tile: row n, head h, rows ``m0..m0+BLOCK_HELD``; streams the key tiles of
    frame prev(f) (only when f >= 2) and then frame 0, like the forward."""
    n_mb = tl.cdiv(L, BLOCK_HELD)
    m0 = (pid % n_mb) * BLOCK_HELD
    nh = pid // n_mb
    h = (nh % H).to(tl.int64)
    n = (nh // H).to(tl.int64)
    f = n % F
    first = n - f

    qa, qb = _load_split(q_ptr + n * sq_n + h * sq_h, m0, L, sq_l, D, BLOCK_HELD, BLOCK_D0,
                         BLOCK_D1, HAS_D1)
    doa, dob = _load_split(do_ptr + n * sdo_n + h * sdo_h, m0, L, sdo_l, D, BLOCK_HELD, BLOCK_D0,
                           BLOCK_D1, HAS_D1)
    row = (n * H + h) * L
    lse2 = _row_vec(lse_ptr + row, m0, L, 0.0, BLOCK_HELD) * 1.4426950408889634
    delta = _row_vec(delta_ptr + row, m0, L, 0.0, BLOCK_HELD)
    dqa = tl.zeros([BLOCK_HELD, BLOCK_D0], dtype=tl.float32)
    dqb = tl.zeros([BLOCK_HELD, BLOCK_D1], dtype=tl.float32)

    n_kf = tl.where(f >= 2, 2, 1)        # key frames streamed: [prev(f),] first
    n_kb = tl.cdiv(L, BLOCK_ITER)
    for t in range(0, n_kf * n_kb):
        kn = tl.where(t // n_kb == n_kf - 1, first, n - 1)
        k0 = (t % n_kb) * BLOCK_ITER
        ka, kb = _load_split(k_ptr + kn * sk_n + h * sk_h, k0, L, sk_l, D, BLOCK_ITER, BLOCK_D0,
                             BLOCK_D1, HAS_D1)
        va, vb = _load_split(v_ptr + kn * sv_n + h * sv_h, k0, L, sv_l, D, BLOCK_ITER, BLOCK_D0,
                             BLOCK_D1, HAS_D1)
        s = _dot_nt(qa, qb, ka, kb, HAS_D1, PREC) * qk_scale                   # [HELD, ITER]
        if not EVEN_L:
            cols = k0 + tl.arange(0, BLOCK_ITER)
            s = tl.where((cols < L)[None, :], s, float("-inf"))
        p = tl.exp2(s - lse2[:, None])
        dp = _dot_nt(doa, dob, va, vb, HAS_D1, PREC)
        ds = (p * (dp - delta[:, None])).to(ka.dtype)
        dqa = tl.dot(ds, ka, dqa, input_precision=PREC)
        if HAS_D1:
            dqb = tl.dot(ds, kb, dqb, input_precision=PREC)

    c = scale * tl.where(f <= 1, 2.0, 1.0)   # the two copies of frame 0 for frames 0 and 1
    _store_split(dq_ptr + n * sg_n + h * sg_h, m0, L, sg_l, dqa * c, dqb * c,
                 D, BLOCK_HELD, BLOCK_D0, BLOCK_D1, HAS_D1)


@tunable(_bwd_configs(), key=_KEY, prune=_prune)
@triton.jit
def _spatial_bwd_kernel(
    do_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, dq_ptr, dk_ptr, dv_ptr,
    sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
    sg_n, sg_l, sg_h,   # strides of dq, dk, dv (all contiguous, same shape)
    N, L, H, F, scale, DTYPE_KEY,
    D: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr, HAS_D1: tl.constexpr,
    PREC: tl.constexpr, EVEN_L: tl.constexpr, BLOCK_HELD: tl.constexpr,
    BLOCK_ITER: tl.constexpr,
):
    """One launch: the first N*H*cdiv(L, BLOCK_HELD) programs compute dk/dv (frame 0's first), the
    next as many compute dq."""
    pid = tl.program_id(0)
    n_kv = N * H * tl.cdiv(L, BLOCK_HELD)
    qk_scale = scale * 1.4426950408889634
    if pid < n_kv:
        _dkdv_program(pid, do_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                      sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
                      sg_n, sg_l, sg_h, L, H, F, N // F, qk_scale, scale,
                      D, BLOCK_D0, BLOCK_D1, HAS_D1, PREC, BLOCK_HELD, BLOCK_ITER)
    else:
        _dq_program(pid - n_kv, do_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, dq_ptr,
                    sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
                    sg_n, sg_l, sg_h, L, H, F, qk_scale, scale,
                    D, BLOCK_D0, BLOCK_D1, HAS_D1, PREC, EVEN_L, BLOCK_HELD, BLOCK_ITER)


# ----------------------------------------------------------------- launchers
def _dtype_key(t):
    return {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[t.dtype]


_SPLIT_HEAD = True   # benchmarks/sweep_spatial.py compares against one padded block


def head_split(d: int):
    """Column chunks of a head dim d: (BLOCK_D0, BLOCK_D1, HAS_D1). One power-of-two block
    ``max(16, next_pow2(d))`` unless two smaller ones cover d with fewer padded columns:
    40 -> 32+16, 80 -> 64+16, 160 -> 128+32, 96 -> 64+32; 64 -> 64, 24 -> 32, 100 -> 128."""
    full = max(16, next_power_of_2(d))
    d0 = max(16, 1 << (d.bit_length() - 1))
    if _SPLIT_HEAD and d - d0 > 0:
        d1 = max(16, next_power_of_2(d - d0))
        if d0 + d1 < full:
            return d0, d1, True
    return full, 16, False


def _static_meta(q):
    """Compile-time parameters shared by every launch: head dim, its column chunks, dot precision,
    and EVEN_L (L is a multiple of 128, hence of every tile size: no key-tile score masks).
    fp32 inputs use exact fp32 dots (tf32 would miss the fp32 tolerance); fp16/bf16 use tensor
    cores with fp32 accumulation."""
    d = q.shape[-1]
    d0, d1, has_d1 = head_split(d)
    return {"D": d, "BLOCK_D0": d0, "BLOCK_D1": d1, "HAS_D1": has_d1,
            "PREC": "ieee" if q.dtype == torch.float32 else "tf32",
            "EVEN_L": q.shape[1] % 128 == 0}


def spatial_attention_fwd(q, k, v, num_frames: int, scale: float):
    """(out (B*F, L, H, D) contiguous in q's dtype, lse (B*F, H, L) fp32 natural-log)."""
    n, l, h, d = q.shape
    out = empty((n, l, h, d), q.dtype, q.device)
    lse = empty((n, h, l), torch.float32, q.device)
    meta = _static_meta(q)
    if triton_interpret():
        meta.update(_INTERP_FWD)

    def grid(m):
        return (n * h * cdiv(l, m["BLOCK_M"]),)
    _spatial_fwd_kernel[grid](
        q, k, v, out, lse,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        l, h, num_frames, scale, _dtype_key(q), **meta)
    return out, lse


def _delta(out, dout):
    """rowsum(dout * out) per (row, head, token): (B*F, H, L) fp32."""
    n, l, h, d = out.shape
    delta = empty((n, h, l), torch.float32, out.device)
    block_d = max(16, next_power_of_2(d))
    block_m = max(1, min(64, 8192 // block_d))
    _delta_kernel[(n * h * cdiv(l, block_m),)](
        out, dout, delta, out.stride(0), out.stride(1), out.stride(2),
        dout.stride(0), dout.stride(1), dout.stride(2), l, h,
        D=d, BLOCK_D=block_d, BLOCK_M=block_m)
    return delta


def spatial_attention_bwd(dout, q, k, v, out, lse, num_frames: int, scale: float):
    """(dq, dk, dv), each (B*F, L, H, D) contiguous in q's dtype."""
    n, l, h, d = q.shape
    delta = _delta(out, dout)
    dq, dk, dv = (empty((n, l, h, d), q.dtype, q.device) for _ in range(3))
    meta = _static_meta(q)
    if triton_interpret():
        meta.update(_INTERP_BWD)

    def grid(m):
        return (2 * n * h * cdiv(l, m["BLOCK_HELD"]),)
    _spatial_bwd_kernel[grid](
        dout, q, k, v, lse, delta, dq, dk, dv,
        dout.stride(0), dout.stride(1), dout.stride(2), q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        dq.stride(0), dq.stride(1), dq.stride(2),
        n, l, h, num_frames, scale, _dtype_key(q), **meta)
    return dq, dk, dv


register_impl("spatial_attention_fwd", "triton", spatial_attention_fwd)
register_impl("spatial_attention_bwd", "triton", spatial_attention_bwd)
