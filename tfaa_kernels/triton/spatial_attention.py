"""Triton kernels of first-adjacent attention, mode="spatial" (DESIGN.md §1a).

Frame ``f``'s L queries attend to the 2L keys ``concat(k[prev(f)], k[0])`` of its clip,
``prev(f) = max(f-1, 0)``. FlashAttention-2 style: a program owns one query tile of one frame and
head and streams, in one loop, the key/value tiles of frame ``prev(f)`` and then frame 0 straight
from q/k/v through their strides (views of a packed qkv projection work as they are; nothing is
concatenated or copied), with an online softmax in fp32 (exp2; ``log2(e)`` and the softmax scale
are applied in the exponent's multiply-add). Offsets are int64. The head dim runs as one or two
power-of-two column chunks (:func:`head_split`: 40 -> 32+16, 80 -> 64+16, 160 -> 128+32), not
padded to the next power of two. Streamed tiles come through TMA tensor descriptors where the
tensors allow it (autotuned ``TMA=1`` configs; the copy engine zero-fills rows past L and columns
past D) and through masked pointer tiles otherwise. On sm_90, 16-bit inputs with D <= 64 and
descriptor-ready tensors run the forward as the Gluon kernel of :mod:`.spatial_attention_hopper`
instead (same outputs; S1 4.43 vs 4.89 ms).

Duplicate keys. Frames 0 and 1 see frame 0's keys twice. Softmax over a key set repeated twice
equals softmax over one copy, and the log-sum-exp grows by ``ln 2``; so those frames stream frame 0
once and add ``ln 2`` to the saved LSE. With that LSE every probability recomputed in the backward
is the duplicated-set one (half the single-copy one) and is counted with weight 2 (both copies).

Layouts: q, k, v, dout ``(B*F, L, H, D)`` with ``stride(-1) == 1``; out, dq, dk, dv
``(B*F, L, H, D)`` contiguous; ``lse`` and ``delta`` ``(B*F, H, L)`` fp32 contiguous (natural-log
LSE of the scaled scores; ``delta = rowsum(dout * out)``).

Backward (two launches after the small delta pass), no atomics, so bitwise deterministic:
- dk/dv programs own one key tile of key frame ``g`` and loop over every query frame that reads it:
  frame 0 is read by all F query frames (weight 2 for frames 0 and 1), frame ``g >= 1`` only by
  frame ``g+1``, the last frame by nobody (zero gradient). Sums stay in fp32 registers and are
  written once. Frame-0 programs (F times the work of the others) come first in launch order, so
  the longest programs start first and the short ones fill the machine behind them.
- dq programs own one query tile and stream the same key tiles as the forward.
The two are separate launches (constexpr PART), each autotuned and register-allocated on its own:
the dk/dv programs hold four fp32 accumulators and want a tall key tile with 4 warps, the dq
programs two and run best with other tiles (S1, H100: dq 5.68 ms at 128x64 / 8 warps vs 6.09 at
the dk/dv choice 128x32 / 4 warps).

On sm_90 the tensors the Gluon forward takes (16-bit, D <= 64, descriptor-ready; dout too) run
both parts as the Gluon kernels of :mod:`.spatial_attention_hopper_bwd` instead (same split, same
outputs up to fp32 summation order, also atomic-free).
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
from ._tma import tma_capable, tma_strides_ok, tma_workspace


# ----------------------------------------------------------------- configs
def _fwd_configs():
    """(BLOCK_M, BLOCK_N, num_warps, num_stages, TMA) tried on the GPU. 128x64 and 128x128 query x
    key tiles with 4-8 warps and 3 stages are the usual Hopper choices of FA2-style Triton kernels
    for head dims <= 128; 64x64 / 64x32 fit registers and shared memory at D = 160..256 (and are
    the only ones kept for fp32). TMA=1: the streamed key/value tiles come through tensor
    descriptors where the tensors allow it (``TMA_OK``): S1 (D = 40) 5.0 ms vs 8.1 ms for the best
    pointer tile; at D = 80 the two are within 3% (S10, H100). TMA=1 configs come first, so they
    are the default when TFAA_AUTOTUNE=0."""
    shapes = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2),
              (32, 32, 4, 1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "TMA": tma}, num_warps=w, num_stages=s)
            for tma in (1, 0) for m, n, w, s in shapes]


def _bwd_configs():
    """(BLOCK_HELD, BLOCK_ITER, num_warps, num_stages): the tile a program keeps in registers (keys
    in the dk/dv part, queries in the dq part) and the tile it streams. A tall held tile and a thin
    streamed one (128x32, as in the FA2 Triton tutorial) keeps the fp32 accumulators resident and
    the streamed loads small; 8 warps hold the larger accumulators of D = 80..160; 64x32 is the
    fallback for D = 256 and fp32. TMA=1: the streamed tiles (q and dout for dk/dv, k and v for dq)
    come through tensor descriptors where the tensors allow it (``TMA_OK``): S1 (D = 40) 14.8 ms vs
    25.2 ms for the best pointer tile; at D = 80 the pointer tiles were faster (1.47 vs 1.72 ms),
    so both are tuned."""
    shapes = [(128, 32, 4, 3), (128, 32, 8, 3), (128, 64, 8, 2), (64, 64, 4, 3), (64, 32, 4, 2),
              (32, 32, 4, 1)]
    return [triton.Config({"BLOCK_HELD": m, "BLOCK_ITER": n, "TMA": tma}, num_warps=w,
                          num_stages=s)
            for tma in (1, 0) for m, n, w, s in shapes]


def _prune(configs, named_args, **kwargs):
    """Keep the tiles that fit the dtype: 16-bit inputs use the tensor-core tiles (>= 64x32);
    fp32 inputs use exact ("ieee") dots on CUDA cores with fp32 operands, so only small tiles
    (<= 64x64), and for head dims > 128 only the single-stage 32x32 tile fits shared memory.
    TMA=1 configs only where the tensors qualify (``TMA_OK``)."""
    d = kwargs.get("D", named_args.get("D", 0))
    if not kwargs.get("TMA_OK", named_args.get("TMA_OK", False)):
        configs = [c for c in configs if not c.kwargs["TMA"]]

    def area(c):
        return math.prod(v for k, v in c.kwargs.items() if k.startswith("BLOCK"))
    if named_args.get("DTYPE_KEY", 1) != 0:
        keep = [c for c in configs if area(c) >= 64 * 32]
    elif d > 128:
        keep = [c for c in configs if area(c) <= 32 * 32]
    else:
        keep = [c for c in configs if 32 * 32 < area(c) <= 64 * 64]
    return keep or configs[-1:]


_KEY = ["L", "H", "D", "DTYPE_KEY", "TMA_OK"]
_INTERP_FWD = {"BLOCK_M": 16, "BLOCK_N": 16, "TMA": 1}       # TMA where the tensors allow it
_INTERP_BWD = {"BLOCK_HELD": 16, "BLOCK_ITER": 16, "TMA": 1}


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


# The tiles a program streams in its loop come from one of two sources (constexpr TMA): device-side
# tensor descriptors over the whole (B*F, L, H, D) tensor, with [1, ROWS, 1, BLOCK_D0] and
# [1, ROWS, 1, BLOCK_D1] boxes (the copy engine computes the addresses and zero-fills rows >= L and
# columns >= D), or int64 pointer tiles with masks (any layout with stride(-1) == 1). The tile a
# program loads once and its outputs always use pointers (see _USE_TMA for why). Frame and head
# indices stay int32 (descriptor coordinates); the pointer path widens them.
@triton.jit
def _slice(ptr, n, h, s_n, s_h):
    """Pointer to frame n, head h of a (B*F, L, H, D) tensor (int64 offsets)."""
    return ptr + n.to(tl.int64) * s_n + h.to(tl.int64) * s_h


@triton.jit
def _source(ptr, N, L, H, s_n, s_l, s_h, D: tl.constexpr, ROWS: tl.constexpr,
            BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr, HAS_D1: tl.constexpr,
            TMA: tl.constexpr):
    """(a0, a1): the descriptors of the two column chunks (TMA), or the base pointer twice."""
    if TMA:
        a0 = tl.make_tensor_descriptor(ptr, [N, L, H, D], [s_n, s_l, s_h, 1],
                                       [1, ROWS, 1, BLOCK_D0])
        if HAS_D1:
            a1 = tl.make_tensor_descriptor(ptr, [N, L, H, D], [s_n, s_l, s_h, 1],
                                           [1, ROWS, 1, BLOCK_D1])
        else:
            a1 = a0
    else:
        a0 = ptr
        a1 = ptr
    return a0, a1


@triton.jit
def _tile(a0, a1, n, row0, h, L, s_n, s_l, s_h, D: tl.constexpr, ROWS: tl.constexpr,
          BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr, HAS_D1: tl.constexpr,
          TMA: tl.constexpr):
    """The column chunks [ROWS, BLOCK_D0], [ROWS, BLOCK_D1] of rows row0.. of frame n, head h,
    zero past L and D (the second a dead zero tile when not HAS_D1)."""
    if TMA:
        t0 = a0.load([n, row0, h, 0]).reshape(ROWS, BLOCK_D0)
        if HAS_D1:
            t1 = a1.load([n, row0, h, BLOCK_D0]).reshape(ROWS, BLOCK_D1)
        else:
            t1 = tl.zeros([ROWS, BLOCK_D1], dtype=t0.dtype)
    else:
        t0, t1 = _load_split(_slice(a0, n, h, s_n, s_h), row0, L, s_l, D, ROWS, BLOCK_D0,
                             BLOCK_D1, HAS_D1)
    return t0, t1


# ----------------------------------------------------------------- forward
@triton.jit
def _query_block(pid, L, H, F, BLOCK_M: tl.constexpr):
    """Query-tile program ``pid`` (forward, dq) -> (m0, nh, h, n, f, first, prev): query rows
    ``m0..m0+BLOCK_M`` of row ``n = b*F + f``, head ``h`` (``nh = n*H + h``); ``first`` is the
    clip's frame 0 and ``prev`` frame prev(f), both as rows. Query blocks of one (n, h) are
    adjacent, so they share the K/V tiles in L2. (Also called by the Gluon forward of
    spatial_attention_hopper.)"""
    n_mb = tl.cdiv(L, BLOCK_M)
    m0 = (pid % n_mb) * BLOCK_M
    nh = pid // n_mb
    h = nh % H
    n = nh // H
    f = n % F
    first = n - f
    prev = first + tl.maximum(f - 1, 0)
    return m0, nh, h, n, f, first, prev


@tunable(_fwd_configs(), key=_KEY, prune=_prune)
@triton.jit
def _spatial_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h, so_n, so_l, so_h,
    N, L, H, F, scale, DTYPE_KEY,
    D: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr, HAS_D1: tl.constexpr,
    PREC: tl.constexpr, EVEN_L: tl.constexpr, TMA_OK: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, TMA: tl.constexpr,
):
    m0, nh, h, n, f, first, prev = _query_block(tl.program_id(0), L, H, F, BLOCK_M)
    USE_TMA: tl.constexpr = TMA and TMA_OK
    kd0, kd1 = _source(k_ptr, N, L, H, sk_n, sk_l, sk_h, D, BLOCK_N, BLOCK_D0, BLOCK_D1, HAS_D1,
                       USE_TMA)
    vd0, vd1 = _source(v_ptr, N, L, H, sv_n, sv_l, sv_h, D, BLOCK_N, BLOCK_D0, BLOCK_D1, HAS_D1,
                       USE_TMA)
    q0, q1 = _tile(q_ptr, q_ptr, n, m0, h, L, sq_n, sq_l, sq_h, D, BLOCK_M, BLOCK_D0, BLOCK_D1,
                   HAS_D1, False)
    qk_scale = scale * 1.4426950408889634     # scores in log2 units; scale > 0 (validated)
    acc0 = tl.zeros([BLOCK_M, BLOCK_D0], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_M, BLOCK_D1], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    # One loop over the key tiles of frame prev(f), then frame 0 (`first`). Frames 0 and 1 have
    # prev(f) == 0: they stream frame 0 once, the duplicate copy is folded into the LSE below.
    n_kb = tl.cdiv(L, BLOCK_N)
    n_it = tl.where(f >= 2, 2 * n_kb, n_kb)
    for t in range(0, n_it):
        kn = tl.where(t < n_it - n_kb, prev, first)
        k0 = (t % n_kb) * BLOCK_N
        ka, kb = _tile(kd0, kd1, kn, k0, h, L, sk_n, sk_l, sk_h, D, BLOCK_N, BLOCK_D0, BLOCK_D1,
                       HAS_D1, USE_TMA)
        s = _dot_nt(q0, q1, ka, kb, HAS_D1, PREC)
        if not EVEN_L:
            cols = k0 + tl.arange(0, BLOCK_N)
            s = tl.where((cols < L)[None, :], s, float("-inf"))
        # the scale is folded into the exponent's multiply-add (max(s) * scale = max(s * scale))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        va, vb = _tile(vd0, vd1, kn, k0, h, L, sv_n, sv_l, sv_h, D, BLOCK_N, BLOCK_D0, BLOCK_D1,
                       HAS_D1, USE_TMA)
        p = p.to(va.dtype)
        acc0 = tl.dot(p, va, acc0 * alpha[:, None], input_precision=PREC)
        if HAS_D1:
            acc1 = tl.dot(p, vb, acc1 * alpha[:, None], input_precision=PREC)
        m_i = m_new

    inv_l = 1.0 / l_i[:, None]
    _store_split(_slice(o_ptr, n, h, so_n, so_h), m0, L, so_l, acc0 * inv_l, acc1 * inv_l, D,
                 BLOCK_M, BLOCK_D0, BLOCK_D1, HAS_D1)
    dup = tl.where(f <= 1, 1.0, 0.0)
    lse = (m_i + tl.log2(l_i) + dup) * 0.6931471805599453
    rows = m0 + tl.arange(0, BLOCK_M)
    tl.store(lse_ptr + nh.to(tl.int64) * L + rows, lse, mask=rows < L)


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
                  sg_n, sg_l, sg_h, N, L, H, F, qk_scale, scale,
                  D: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr,
                  HAS_D1: tl.constexpr, PREC: tl.constexpr, TMA: tl.constexpr,
                  BLOCK_HELD: tl.constexpr, BLOCK_ITER: tl.constexpr):
    """dk, dv of one key tile: key frame ``g``, head ``h``, rows ``k0..k0+BLOCK_HELD``.
    pid -> (key block fastest, head, clip, key frame g slowest): frame-0 programs launch first."""
    n_kb = tl.cdiv(L, BLOCK_HELD)
    k0 = (pid % n_kb) * BLOCK_HELD
    r = pid // n_kb
    h = r % H
    r = r // H
    n_clips = N // F
    clip = (r % n_clips) * F
    g = r // n_clips
    kn = clip + g

    qd0, qd1 = _source(q_ptr, N, L, H, sq_n, sq_l, sq_h, D, BLOCK_ITER, BLOCK_D0, BLOCK_D1,
                       HAS_D1, TMA)
    dod0, dod1 = _source(do_ptr, N, L, H, sdo_n, sdo_l, sdo_h, D, BLOCK_ITER, BLOCK_D0, BLOCK_D1,
                         HAS_D1, TMA)
    ka, kb = _tile(k_ptr, k_ptr, kn, k0, h, L, sk_n, sk_l, sk_h, D, BLOCK_HELD, BLOCK_D0,
                   BLOCK_D1, HAS_D1, False)
    va, vb = _tile(v_ptr, v_ptr, kn, k0, h, L, sv_n, sv_l, sv_h, D, BLOCK_HELD, BLOCK_D0,
                   BLOCK_D1, HAS_D1, False)
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
        qa, qb = _tile(qd0, qd1, qn, m0, h, L, sq_n, sq_l, sq_h, D, BLOCK_ITER, BLOCK_D0,
                       BLOCK_D1, HAS_D1, TMA)
        doa, dob = _tile(dod0, dod1, qn, m0, h, L, sdo_n, sdo_l, sdo_h, D, BLOCK_ITER, BLOCK_D0,
                         BLOCK_D1, HAS_D1, TMA)
        row = (qn * H + h).to(tl.int64) * L
        lse2 = _row_vec(lse_ptr + row, m0, L, float("inf"), BLOCK_ITER) * 1.4426950408889634
        delta = _row_vec(delta_ptr + row, m0, L, 0.0, BLOCK_ITER)
        # frames 0 and 1 read frame 0 twice (as prev and as first): both copies count
        w = tl.where(f <= 1, 2.0, 1.0)
        s_t = _dot_nt(ka, kb, qa, qb, HAS_D1, PREC)                             # [HELD, ITER]
        p_t = tl.exp2(s_t * qk_scale - lse2[None, :]) * w
        dp_t = _dot_nt(va, vb, doa, dob, HAS_D1, PREC)
        ds_t = (p_t * (dp_t - delta[None, :])).to(qa.dtype)
        p_t = p_t.to(doa.dtype)
        dva = tl.dot(p_t, doa, dva, input_precision=PREC)
        dka = tl.dot(ds_t, qa, dka, input_precision=PREC)
        if HAS_D1:
            dvb = tl.dot(p_t, dob, dvb, input_precision=PREC)
            dkb = tl.dot(ds_t, qb, dkb, input_precision=PREC)

    _store_split(_slice(dk_ptr, kn, h, sg_n, sg_h), k0, L, sg_l, dka * scale, dkb * scale, D,
                 BLOCK_HELD, BLOCK_D0, BLOCK_D1, HAS_D1)
    _store_split(_slice(dv_ptr, kn, h, sg_n, sg_h), k0, L, sg_l, dva, dvb, D, BLOCK_HELD, BLOCK_D0,
                 BLOCK_D1, HAS_D1)


@triton.jit
def _dq_program(pid, do_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, dq_ptr,
                sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
                sg_n, sg_l, sg_h, N, L, H, F, qk_scale, scale,
                D: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr,
                HAS_D1: tl.constexpr, PREC: tl.constexpr, EVEN_L: tl.constexpr,
                TMA: tl.constexpr, BLOCK_HELD: tl.constexpr, BLOCK_ITER: tl.constexpr):
    """dq of one query tile: row n, head h, rows ``m0..m0+BLOCK_HELD``; streams the key tiles of
    frame prev(f) (only when f >= 2) and then frame 0, like the forward."""
    m0, nh, h, n, f, first, prev = _query_block(pid, L, H, F, BLOCK_HELD)

    kd0, kd1 = _source(k_ptr, N, L, H, sk_n, sk_l, sk_h, D, BLOCK_ITER, BLOCK_D0, BLOCK_D1,
                       HAS_D1, TMA)
    vd0, vd1 = _source(v_ptr, N, L, H, sv_n, sv_l, sv_h, D, BLOCK_ITER, BLOCK_D0, BLOCK_D1,
                       HAS_D1, TMA)
    qa, qb = _tile(q_ptr, q_ptr, n, m0, h, L, sq_n, sq_l, sq_h, D, BLOCK_HELD, BLOCK_D0, BLOCK_D1,
                   HAS_D1, False)
    doa, dob = _tile(do_ptr, do_ptr, n, m0, h, L, sdo_n, sdo_l, sdo_h, D, BLOCK_HELD, BLOCK_D0,
                     BLOCK_D1, HAS_D1, False)
    row = nh.to(tl.int64) * L
    lse2 = _row_vec(lse_ptr + row, m0, L, 0.0, BLOCK_HELD) * 1.4426950408889634
    delta = _row_vec(delta_ptr + row, m0, L, 0.0, BLOCK_HELD)
    dqa = tl.zeros([BLOCK_HELD, BLOCK_D0], dtype=tl.float32)
    dqb = tl.zeros([BLOCK_HELD, BLOCK_D1], dtype=tl.float32)

    n_kf = tl.where(f >= 2, 2, 1)        # key frames streamed: [prev(f),] first
    n_kb = tl.cdiv(L, BLOCK_ITER)
    for t in range(0, n_kf * n_kb):
        kn = tl.where(t // n_kb == n_kf - 1, first, prev)
        k0 = (t % n_kb) * BLOCK_ITER
        ka, kb = _tile(kd0, kd1, kn, k0, h, L, sk_n, sk_l, sk_h, D, BLOCK_ITER, BLOCK_D0,
                       BLOCK_D1, HAS_D1, TMA)
        va, vb = _tile(vd0, vd1, kn, k0, h, L, sv_n, sv_l, sv_h, D, BLOCK_ITER, BLOCK_D0,
                       BLOCK_D1, HAS_D1, TMA)
        s = _dot_nt(qa, qb, ka, kb, HAS_D1, PREC)                               # [HELD, ITER]
        if not EVEN_L:
            cols = k0 + tl.arange(0, BLOCK_ITER)
            s = tl.where((cols < L)[None, :], s, float("-inf"))
        p = tl.exp2(s * qk_scale - lse2[:, None])
        dp = _dot_nt(doa, dob, va, vb, HAS_D1, PREC)
        ds = (p * (dp - delta[:, None])).to(ka.dtype)
        dqa = tl.dot(ds, ka, dqa, input_precision=PREC)
        if HAS_D1:
            dqb = tl.dot(ds, kb, dqb, input_precision=PREC)

    c = scale * tl.where(f <= 1, 2.0, 1.0)   # the two copies of frame 0 for frames 0 and 1
    _store_split(_slice(dq_ptr, n, h, sg_n, sg_h), m0, L, sg_l, dqa * c, dqb * c, D, BLOCK_HELD,
                 BLOCK_D0, BLOCK_D1, HAS_D1)


@tunable(_bwd_configs(), key=_KEY + ["PART"], prune=_prune)
@triton.jit
def _spatial_bwd_kernel(
    do_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, g0_ptr, g1_ptr,
    sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
    sg_n, sg_l, sg_h,   # strides of the gradients (all contiguous, same shape)
    N, L, H, F, scale, DTYPE_KEY,
    D: tl.constexpr, BLOCK_D0: tl.constexpr, BLOCK_D1: tl.constexpr, HAS_D1: tl.constexpr,
    PREC: tl.constexpr, EVEN_L: tl.constexpr, TMA_OK: tl.constexpr, PART: tl.constexpr,
    BLOCK_HELD: tl.constexpr, BLOCK_ITER: tl.constexpr, TMA: tl.constexpr,
):
    """N*H*cdiv(L, BLOCK_HELD) programs: PART 0 computes dk (g0) and dv (g1), one key tile each,
    frame 0's first; PART 1 computes dq (g0), one query tile each. PART is part of the autotuning
    key, so the two launches are tuned (and register-allocated) separately."""
    pid = tl.program_id(0)
    qk_scale = scale * 1.4426950408889634
    USE_TMA: tl.constexpr = TMA and TMA_OK
    if PART == 0:
        _dkdv_program(pid, do_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, g0_ptr, g1_ptr,
                      sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
                      sg_n, sg_l, sg_h, N, L, H, F, qk_scale, scale,
                      D, BLOCK_D0, BLOCK_D1, HAS_D1, PREC, USE_TMA, BLOCK_HELD, BLOCK_ITER)
    else:
        _dq_program(pid, do_ptr, q_ptr, k_ptr, v_ptr, lse_ptr, delta_ptr, g0_ptr,
                    sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
                    sg_n, sg_l, sg_h, N, L, H, F, qk_scale, scale,
                    D, BLOCK_D0, BLOCK_D1, HAS_D1, PREC, EVEN_L, USE_TMA, BLOCK_HELD, BLOCK_ITER)


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


# Set to False to force the pointer path (tests compare both on the same shapes).
_USE_TMA = True
# Descriptors serve only the streamed tiles. A first version that also loaded the held tile and
# stored the output through descriptors gave wrong results on the H100 (Triton 3.6) whenever the
# head dim ran as one column chunk (D = 64, or 40 padded to 64): relative error 0.6-0.8 for every
# backward tile and the forward's BLOCK_N = 64 tiles, while split head dims were exact (S10 probes).
# With pointers for held tiles and outputs, every tile is exact for D = 32, 40 (one 64 chunk or
# 32+16), 64, 80 and 160; tests/test_attention_spatial.py::test_every_config_gpu keeps checking.


def _tma_ok(*tensors) -> bool:
    """Whether every (B*F, L, H, D) tensor can be read through descriptors: a TMA-capable device
    (sm_90+ or the interpreter), channels contiguous, 16-byte aligned base and strides."""
    return (_USE_TMA and tma_capable(tensors[0].device)
            and all(tma_strides_ok(t) for t in tensors))


def _static_meta(q, *streamed, one_chunk_upto: int = 0):
    """Compile-time parameters shared by every launch: head dim, its column chunks, dot precision,
    EVEN_L (L is a multiple of 128, hence of every tile size: no key-tile score masks) and TMA_OK
    (every tensor the kernel streams qualifies for descriptors, :func:`_tma_ok`). With TMA_OK,
    head dims up to ``one_chunk_upto`` run as one padded chunk instead of :func:`head_split`'s two.
    fp32 inputs use exact fp32 dots (tf32 would miss the fp32 tolerance); fp16/bf16 use tensor
    cores with fp32 accumulation."""
    d = q.shape[-1]
    tma_ok = _tma_ok(*streamed)
    d0, d1, has_d1 = head_split(d)
    if tma_ok and has_d1 and d <= one_chunk_upto:
        d0, d1, has_d1 = max(16, next_power_of_2(d)), 16, False
    return {"D": d, "BLOCK_D0": d0, "BLOCK_D1": d1, "HAS_D1": has_d1,
            "PREC": "ieee" if q.dtype == torch.float32 else "tf32",
            "EVEN_L": q.shape[1] % 128 == 0, "TMA_OK": tma_ok}


# The forward with descriptor tiles runs D = 40 as one 64-column chunk: S1 4.87 ms vs 5.26 ms as
# 32+16 (S10, H100); the backward stays split there (15.1 ms vs 16.1 padded).
_FWD_ONE_CHUNK_UPTO = 64


def spatial_attention_fwd(q, k, v, num_frames: int, scale: float):
    """(out (B*F, L, H, D) contiguous in q's dtype, lse (B*F, H, L) fp32 natural-log)."""
    n, l, h, d = q.shape
    out = empty((n, l, h, d), q.dtype, q.device)
    lse = empty((n, h, l), torch.float32, q.device)
    if hopper.supported(q, k, v):     # sm_90, 16-bit, D <= 64, TMA-ready: the Gluon kernel
        hopper.spatial_attention_fwd_hopper(q, k, v, out, lse, num_frames, scale)
        return out, lse
    meta = _static_meta(q, k, v, one_chunk_upto=_FWD_ONE_CHUNK_UPTO)
    if triton_interpret():
        meta.update(_INTERP_FWD)

    def grid(m):
        return (n * h * cdiv(l, m["BLOCK_M"]),)
    tma_workspace(q.device, lambda: _spatial_fwd_kernel[grid](
        q, k, v, out, lse,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        n, l, h, num_frames, scale, _dtype_key(q), **meta), needed=meta["TMA_OK"])
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
    if hopper_bwd.supported(dout, q, k, v):   # sm_90, 16-bit, D <= 64, TMA-ready: Gluon kernels
        hopper_bwd.spatial_attention_bwd_hopper(dout, q, k, v, lse, delta, dq, dk, dv, num_frames,
                                                scale)
        return dq, dk, dv
    meta = _static_meta(q, q, dout, k, v)
    if triton_interpret():
        meta.update(_INTERP_BWD)

    def grid(m):
        return (n * h * cdiv(l, m["BLOCK_HELD"]),)
    strides = (dout.stride(0), dout.stride(1), dout.stride(2), q.stride(0), q.stride(1),
               q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1),
               v.stride(2), dq.stride(0), dq.stride(1), dq.stride(2))
    tail = (n, l, h, num_frames, scale, _dtype_key(q))
    for part, g0, g1 in ((0, dk, dv), (1, dq, dq)):
        tma_workspace(q.device, lambda: _spatial_bwd_kernel[grid](
            dout, q, k, v, lse, delta, g0, g1, *strides, *tail, PART=part, **meta),
            needed=meta["TMA_OK"])
    return dq, dk, dv


# Imported last: the Gluon forward calls this module's _query_block and _tma_ok.
from . import spatial_attention_hopper as hopper  # noqa: E402
from . import spatial_attention_hopper_bwd as hopper_bwd  # noqa: E402

register_impl("spatial_attention_fwd", "triton", spatial_attention_fwd)
register_impl("spatial_attention_bwd", "triton", spatial_attention_bwd)
