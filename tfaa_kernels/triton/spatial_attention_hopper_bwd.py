"""Hopper (sm_90) backward of first-adjacent attention, mode="spatial", in Gluon (DESIGN.md §1a).

Same semantics, inputs and outputs as the two backward launches of ``spatial_attention`` (the
dk/dv part and the dq part; see that module for the duplicate-key weights), for the shapes the
Gluon forward of :mod:`.spatial_attention_hopper` takes: 16-bit tensors with head dims <= 64 that
qualify for TMA descriptors. Atomic-free, so bitwise deterministic like the Triton launches.

One kernel serves both parts (constexpr ``DQ``): a CTA holds ``NWG x 64`` rows of two tensors of
one frame and head (H1, H2), and streams BLOCK_N-row tiles of two others (T1, T2) from the frames
that pair with it, computing per tile

    X = H1 T1^T,  Y = H2 T2^T                       ([64, BLOCK_N] per consumer warp group)
    P = exp2(X * scale * log2(e) - LSE * log2(e)),  dS = P * (Y - delta)

- DQ = 0 (dk/dv): H1, H2 = k, v of key frame g; T1, T2 = q, dout of the frames reading it (all
  frames for g = 0, weight 2 for query frames 0 and 1; frame g+1 otherwise); LSE and delta are
  per streamed column. dV += P T2, dK += dS T1 (dK scaled at the end).
- DQ = 1 (dq): H1, H2 = q, dout of frame f; T1, T2 = k, v of frames prev(f) (f >= 2) and 0; LSE
  and delta per held row. dQ += dS T1, scaled (and doubled for frames 0 and 1) at the end.

The pipeline is the forward's: consumer warp groups of 64 held rows each and a TMA ring of T1/T2
tiles that group 0 refills. Issue order (S21-runs 1-3, H100, S1): in iteration j the dq part
issues X_j and Y_j together with the dQ update of tile j-1, waits for all of them, then computes
P_j and dS_j. The dk/dv part streams 128-row tiles and issues the dV, dK updates of tile j-1 with
X_j, waits for the updates (P_{j-1} and dS_{j-1} then free their registers), issues Y_j and
computes P_j while Y_j runs (ptxas moves the final wait up after ~10 of the 64 exponentials, so
the overlap is partial), with the LSE and delta of tile j+1 loading under the matmuls: 6.84-7.32
ms vs 7.40-7.50 for 64-row tiles issued all at once (64-row tiles in the new order: 7.64-8.67;
D = 64: 7.56-8.75 vs 7.98-8.04). All four products at once with 128-row tiles need ~250 registers
(ptxas spilled and serialized the wgmmas); the dq part in either order with 128-row tiles and two
groups was no faster (S1 backward 11.92-11.97 / 11.75-12.49 ms vs 11.72-11.88). Turn-taking
(``TURN``): the dq part hands the tensor cores from group to group when it has issued its
matmuls (4.87 ms; 4.94 handing over at completion as the forward does, 5.24 without turns); the
dk/dv part runs without turns (with them its groups queued behind each other's long matmul
chains, S19/S20). Groups (``GROUPS``): the dq part runs three per CTA at 160 registers; the dk/dv
part two at 240 (at 168 registers ptxas serialized its wgmmas at D = 40 / 48 and spilled, S20).
Rings (``STAGES``, ``LAG``): the dk/dv part 4 slots of 128-row tiles refilled 2 tiles behind
(shared memory holds no more), the dq part 5 of 64 rows refilled 3 behind. Head dims 33..48 run
the products over the head dim at K = 48 and the accumulators at N = 40 or 48 (slices of the
64-wide shared tiles), as in the forward. S1 dk/dv + dq parts: 11.72-11.88 ms vs 12.35-12.71 in
the same process for the Session 20 kernel (S21-run 2).
"""
from __future__ import annotations

import triton

from .spatial_attention import _tma_ok
from .spatial_attention_hopper import GLUON, HeadDimPlan, supported as _fwd_supported

if GLUON:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma_wait
    from .spatial_attention_hopper import _load_tiles, _pv, _qk, _ring_barriers

# Set to False to run the Triton launches instead (tests compare both on the same shapes).
_ENABLED = True

ROWS = 64          # held rows per consumer warp group (wgmma's M)
GROUPS = (2, 3)    # consumer warp groups per CTA, dk/dv and dq part
BLOCK_N = (128, 64)  # rows per streamed tile, dk/dv and dq part
STAGES = (4, 5)    # ring slots (each holds a T1 and a T2 tile), dk/dv and dq part
LAG = (2, 3)       # group 0 refills the slot of tile j - LAG in iteration j
REGS = (240, 160)  # registers per thread of the worker groups, dk/dv and dq part
TURN = (0, 1)      # turn-taking of the dk/dv and the dq part (see the module docstring); the
                   # dk/dv part's group 0 refills before it hands over, so turns there need
                   # LAG >= 2 (lag 1 deadlocks, S21-run 6)


def supported(dout, q, k, v) -> bool:
    """Whether these kernels run the backward: what the Gluon forward takes, with dout (q's dtype)
    readable through TMA descriptors too."""
    return (_ENABLED and _fwd_supported(q, k, v) and dout.dtype == q.dtype
            and _tma_ok(dout))


if GLUON:
    _ROWS = gl.constexpr(ROWS)
    _LOG2E = gl.constexpr(1.4426950408889634)

    @gluon.jit
    def _col_stats(lse_ptr, delta_ptr, j, n_it, s0, wf, n_tb, h, H, L, BLOCK_N: gl.constexpr):
        """dk/dv part: LSE and delta of streamed tile j's query rows (frame row s0 + j // n_tb,
        clip frame wf + j // n_tb), one value per thread: the caller loads them a tile ahead and
        spreads them over the score layout when it uses them. The LSE is in log2 units, less 1
        for query frames 0 and 1 (so their P comes out doubled: both copies of frame 0's keys
        count), and +inf past L and past the last tile (P = 0 there)."""
        fi = j // n_tb
        c_l: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
        cols = (j % n_tb) * BLOCK_N + gl.arange(0, BLOCK_N, layout=c_l)
        base = ((s0 + fi) * H + h).to(gl.int64) * L
        ok = (cols < L) & (j < n_it)
        dup = gl.where(wf + fi <= 1, 1.0, 0.0)
        lse = gl.load(lse_ptr + base + cols, mask=ok, other=float("inf")) * _LOG2E - dup
        delta = gl.load(delta_ptr + base + cols, mask=ok, other=0.0)
        return lse, delta

    @gluon.jit
    def _stat(v, s_l: gl.constexpr, DQ: gl.constexpr):
        """A per-row (DQ) or per-column statistic ([64] or [BLOCK_N]) broadcastable over the
        score layout s_l (a column statistic is spread through shared memory)."""
        if DQ:
            return gl.expand_dims(v, 1)
        else:
            return gl.expand_dims(gl.convert_layout(v, gl.SliceLayout(0, s_l)), 0)

    @gluon.jit
    def _p_ds(x, y, lse, delta, qk_scale, DQ: gl.constexpr, p_l: gl.constexpr,
              dtype: gl.constexpr):
        """P = exp2(X * qk_scale - LSE) and dS = P (Y - delta), both in the wgmma A-operand
        layout; LSE and delta per row (DQ) or per column."""
        s_l: gl.constexpr = x.type.layout
        p = gl.exp2(x * qk_scale - _stat(lse, s_l, DQ))
        ds = p * (y - _stat(delta, s_l, DQ))
        return gl.convert_layout(p.to(dtype), p_l), gl.convert_layout(ds.to(dtype), p_l)

    @gluon.jit
    def _release(pslot, j, rt, WG: gl.constexpr, DQ: gl.constexpr, LAG: gl.constexpr,
                 BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
        """This group is done with ring slot ``pslot`` (tile j-1); group 0 refills the slot of
        tile j - LAG with tile j - LAG + STAGES once every group has released it."""
        (t1d, t2d, lse_ptr, delta_ptr, g1_ptr, g2_ptr, h1_smem, h2_smem, t1_smem, t2_smem, h_bar,
         ready, empty, turn, n, r0, h, s0, s1, wf, n_tb, n_it, L, H, D, qk_scale, scale) = rt
        mbarrier.arrive(empty.index(pslot), count=1)
        if WG == 0:
            if j >= LAG:
                t = j - LAG
                mbarrier.wait(empty.index(t % STAGES), (t // STAGES) & 1)
                _load_tiles(t1d, t2d, t1_smem, t2_smem, ready, t + STAGES, n_it, n_tb, s0, s1, h,
                            DQ, BLOCK_N, STAGES)

    @gluon.jit
    def _store_cols(ptr, n, h, row0, col0, acc, c, L, H, D, acc_l: gl.constexpr,
                    WIDTH: gl.constexpr):
        """Store c * acc ([64, WIDTH] fp32) to rows row0.., head-dim columns col0.. of frame row n,
        head h of a contiguous (B*F, L, H, D) tensor; rows >= L, columns >= D dropped."""
        rows = row0 + gl.arange(0, _ROWS, layout=gl.SliceLayout(1, acc_l))
        cols = col0 + gl.arange(0, WIDTH, layout=gl.SliceLayout(0, acc_l))
        off = ((n.to(gl.int64) * L + gl.expand_dims(rows, 1)) * H + h) * D + gl.expand_dims(cols, 0)
        mask = gl.expand_dims(rows < L, 1) & gl.expand_dims(cols < D, 0)
        gl.store(ptr + off, (acc * c).to(ptr.dtype.element_ty), mask=mask)

    @gluon.jit
    def _store_acc(ptr, n, h, row0, acc_a, acc_b, c, L, H, D,
                   a_l: gl.constexpr, b_l: gl.constexpr, DA: gl.constexpr, VB: gl.constexpr):
        """Store c * [acc_a | acc_b]: head-dim columns [0, DA) and, when split, [DA, DA + VB)."""
        _store_cols(ptr, n, h, row0, 0, acc_a, c, L, H, D, a_l, DA)
        if VB > 0:
            _store_cols(ptr, n, h, row0, DA, acc_b, c, L, H, D, b_l, VB)

    @gluon.jit
    def _consumer(rt, WG: gl.constexpr, NWG: gl.constexpr, DQ: gl.constexpr, LAG: gl.constexpr,
                  BLOCK_D: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                  DA: gl.constexpr, QB: gl.constexpr, VB: gl.constexpr, TURN: gl.constexpr):
        """Warp group WG: held rows r0 + 64 WG .. + 64 of frame row n, head h. acc1 is dQ (DQ) or
        dK, acc2 dV (unused when DQ); ``_a`` over head-dim columns [0, DA), ``_b`` over
        [DA, DA + VB) when the head dim is split (else a [64, 8] placeholder). ``rt``: the
        kernel's runtime values, one tuple (see the kernel)."""
        (t1d, t2d, lse_ptr, delta_ptr, g1_ptr, g2_ptr, h1_smem, h2_smem, t1_smem, t2_smem, h_bar,
         ready, empty, turn, n, r0, h, s0, s1, wf, n_tb, n_it, L, H, D, qk_scale, scale) = rt
        dtype: gl.constexpr = h1_smem.dtype
        s_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, BLOCK_N, 16])
        a_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, DA, 16])
        NB: gl.constexpr = VB if VB > 0 else 8
        b_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, NB, 16])
        p_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=a_l, k_width=2)
        pb_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=b_l, k_width=2)
        hq1 = h1_smem.index(WG).reshape([_ROWS, BLOCK_D])
        hq2 = h2_smem.index(WG).reshape([_ROWS, BLOCK_D])
        zero_s = gl.zeros([_ROWS, BLOCK_N], gl.float32, s_l)
        acc1a = gl.zeros([_ROWS, DA], gl.float32, a_l)
        acc1b = gl.zeros([_ROWS, NB], gl.float32, b_l)
        acc2a = gl.zeros([_ROWS, DA], gl.float32, a_l)
        acc2b = gl.zeros([_ROWS, NB], gl.float32, b_l)
        row0 = r0 + WG * _ROWS
        if DQ:   # per held (query) row
            rows = row0 + gl.arange(0, _ROWS, layout=gl.SliceLayout(1, s_l))
            base = (n * H + h).to(gl.int64) * L
            lse = gl.load(lse_ptr + base + rows, mask=rows < L, other=0.0) * _LOG2E
            delta = gl.load(delta_ptr + base + rows, mask=rows < L, other=0.0)
        else:    # per streamed (query) column, loaded a tile ahead
            lse, delta = _col_stats(lse_ptr, delta_ptr, 0, n_it, s0, wf, n_tb, h, H, L, BLOCK_N)
        mine = turn.index(WG)
        nxt = turn.index((WG + 1) % NWG)

        mbarrier.wait(h_bar, 0)
        if n_it > 0:
            # tile 0: X, Y, P, dS only (no accumulator updates yet)
            mbarrier.wait(ready.index(0), 0)
            if TURN:
                mbarrier.wait(mine, 0)
            x_tok = _qk(hq1, t1_smem.index(0), zero_s, BLOCK_N, BLOCK_D, DA, QB)
            y_tok = _qk(hq2, t2_smem.index(0), zero_s, BLOCK_N, BLOCK_D, DA, QB)
            if TURN:
                mbarrier.arrive(nxt, count=1)
            if not DQ:
                lse_n, delta_n = _col_stats(lse_ptr, delta_ptr, 1, n_it, s0, wf, n_tb, h, H, L,
                                            BLOCK_N)
            x, y = warpgroup_mma_wait(0, deps=(x_tok, y_tok))
            p16, ds16 = _p_ds(x, y, lse, delta, qk_scale, DQ, p_l, dtype)
            if not DQ:
                lse, delta = lse_n, delta_n
            for j in range(1, n_it):
                slot = j % STAGES
                pslot = (j - 1) % STAGES
                mbarrier.wait(ready.index(slot), (j // STAGES) & 1)
                if TURN:
                    mbarrier.wait(mine, j & 1)
                if DQ:   # X_j, Y_j and dQ += dS_{j-1} K_{j-1} together
                    x_tok = _qk(hq1, t1_smem.index(slot), zero_s, BLOCK_N, BLOCK_D, DA, QB)
                    y_tok = _qk(hq2, t2_smem.index(slot), zero_s, BLOCK_N, BLOCK_D, DA, QB)
                    acc1a, acc1b = _pv(ds16, t1_smem.index(pslot), acc1a, acc1b, pb_l, BLOCK_N,
                                       BLOCK_D, DA, VB)
                    if TURN:   # the next group's matmuls may go
                        mbarrier.arrive(nxt, count=1)
                    x, y, acc1a, acc1b = warpgroup_mma_wait(0, deps=(x_tok, y_tok, acc1a, acc1b))
                    _release(pslot, j, rt, WG, DQ, LAG, BLOCK_N, STAGES)
                    p16, ds16 = _p_ds(x, y, lse, delta, qk_scale, DQ, p_l, dtype)
                else:    # dV, dK updates of tile j-1 and X_j; then Y_j, with P_j computed under it
                    lse_c = _stat(lse, s_l, DQ)
                    acc2a, acc2b = _pv(p16, t2_smem.index(pslot), acc2a, acc2b, pb_l, BLOCK_N,
                                       BLOCK_D, DA, VB)
                    acc1a, acc1b = _pv(ds16, t1_smem.index(pslot), acc1a, acc1b, pb_l, BLOCK_N,
                                       BLOCK_D, DA, VB)
                    x_tok = _qk(hq1, t1_smem.index(slot), zero_s, BLOCK_N, BLOCK_D, DA, QB)
                    lse_n, delta_n = _col_stats(lse_ptr, delta_ptr, j + 1, n_it, s0, wf, n_tb, h,
                                                H, L, BLOCK_N)   # loads under the matmuls
                    XG: gl.constexpr = 2 if QB > 0 else 1       # commit groups of X (and Y)
                    acc1a, acc1b, acc2a, acc2b = warpgroup_mma_wait(
                        XG, deps=(acc1a, acc1b, acc2a, acc2b))   # P, dS of tile j-1 are free
                    _release(pslot, j, rt, WG, DQ, LAG, BLOCK_N, STAGES)
                    y_tok = _qk(hq2, t2_smem.index(slot), zero_s, BLOCK_N, BLOCK_D, DA, QB)
                    if TURN:
                        mbarrier.arrive(nxt, count=1)
                    x = warpgroup_mma_wait(XG, deps=(x_tok,))
                    p = gl.exp2(x * qk_scale - lse_c)
                    y = warpgroup_mma_wait(0, deps=(y_tok,))
                    ds = p * (y - _stat(delta, s_l, DQ))
                    p16 = gl.convert_layout(p.to(dtype), p_l)
                    ds16 = gl.convert_layout(ds.to(dtype), p_l)
                    lse, delta = lse_n, delta_n
            pslot = (n_it - 1) % STAGES
            if not DQ:
                acc2a, acc2b = _pv(p16, t2_smem.index(pslot), acc2a, acc2b, pb_l, BLOCK_N,
                                   BLOCK_D, DA, VB)
            acc1a, acc1b = _pv(ds16, t1_smem.index(pslot), acc1a, acc1b, pb_l, BLOCK_N, BLOCK_D,
                               DA, VB)
            acc1a, acc1b, acc2a, acc2b = warpgroup_mma_wait(0, deps=(acc1a, acc1b, acc2a, acc2b))

        if DQ:   # the two copies of frame 0 for frames 0 and 1
            _store_acc(g1_ptr, n, h, row0, acc1a, acc1b, scale * gl.where(wf <= 1, 2.0, 1.0),
                       L, H, D, a_l, b_l, DA, VB)
        else:
            _store_acc(g1_ptr, n, h, row0, acc1a, acc1b, scale, L, H, D, a_l, b_l, DA, VB)
            _store_acc(g2_ptr, n, h, row0, acc2a, acc2b, 1.0, L, H, D, a_l, b_l, DA, VB)

    @gluon.jit
    def _spatial_bwd_hopper_kernel(
            h1d, h2d, t1d, t2d, lse_ptr, delta_ptr, g1_ptr, g2_ptr, N, L, H, F, D, qk_scale,
            scale,
            DQ: gl.constexpr, BLOCK_D: gl.constexpr, NWG: gl.constexpr, BLOCK_N: gl.constexpr,
            STAGES: gl.constexpr, LAG: gl.constexpr, REGS: gl.constexpr, DA: gl.constexpr,
            QB: gl.constexpr, VB: gl.constexpr, TURN: gl.constexpr):
        """Program -> (held frame row n, head h, block of NWG * 64 held rows); see the module
        docstring. Descriptors over (B*F, L, H, D) with [1, 64, 1, BLOCK_D] boxes (held) and
        [1, BLOCK_N, 1, BLOCK_D] boxes (streamed). ``qk_scale`` = softmax scale * log2(e); g1, g2:
        dQ (DQ) or dK, dV, contiguous (B*F, L, H, D)."""
        gl.static_assert(NWG == 2 or NWG == 3, "two or three consumer warp groups")
        gl.static_assert(STAGES >= LAG + 2, "the ring refills tile j-LAG's slot in iteration j")
        dtype: gl.constexpr = h1d.dtype
        pid = gl.program_id(0)
        n_hb = gl.cdiv(L, NWG * _ROWS)
        r0 = (pid % n_hb) * (NWG * _ROWS)
        r = pid // n_hb
        h = r % H
        r = r // H
        n_tb = gl.cdiv(L, BLOCK_N)
        if DQ:   # query blocks of one (n, h) adjacent, so they share K/V tiles in L2
            n = r
            fr = n % F
            s1 = n - fr                                   # frame 0
            s0 = s1 + gl.maximum(fr - 1, 0)               # prev(f)
            n_it = gl.where(fr >= 2, 2 * n_tb, n_tb)      # frames 0, 1: frame 0 once
            wf = fr
        else:    # key frame g slowest: frame-0 programs (F times the work) launch first
            n_clips = N // F
            s1 = (r % n_clips) * F                        # the clip's frame 0
            g = r // n_clips
            n = s1 + g
            f_lo = gl.where(g == 0, 0, g + 1)             # readers: all frames, or frame g+1
            f_hi = gl.where(g == 0, F, gl.minimum(g + 2, F))
            s0 = s1 + f_lo
            n_it = gl.maximum(f_hi - f_lo, 0) * n_tb
            wf = f_lo

        smem_l: gl.constexpr = h1d.layout
        h1_smem = gl.allocate_shared_memory(dtype, [NWG, 1, _ROWS, 1, BLOCK_D], smem_l)
        h2_smem = gl.allocate_shared_memory(dtype, [NWG, 1, _ROWS, 1, BLOCK_D], smem_l)
        t1_smem = gl.allocate_shared_memory(dtype, [STAGES, 1, BLOCK_N, 1, BLOCK_D], smem_l)
        t2_smem = gl.allocate_shared_memory(dtype, [STAGES, 1, BLOCK_N, 1, BLOCK_D], smem_l)
        h_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(h_bar, count=1)
        ready, empty, turn = _ring_barriers(STAGES, NWG)

        mbarrier.expect(h_bar, NWG * (h1d.block_type.nbytes + h2d.block_type.nbytes))
        for i in gl.static_range(NWG):
            tma.async_copy_global_to_shared(h1d, [n, r0 + i * _ROWS, h, 0], h_bar,
                                            h1_smem.index(i))
            tma.async_copy_global_to_shared(h2d, [n, r0 + i * _ROWS, h, 0], h_bar,
                                            h2_smem.index(i))
        for i in gl.static_range(STAGES):
            _load_tiles(t1d, t2d, t1_smem, t2_smem, ready, i, n_it, n_tb, s0, s1, h, DQ,
                        BLOCK_N, STAGES)

        # worker partitions take scalars as tensors (an int argument equal to 1 is a constexpr)
        n = gl.to_tensor(n)
        r0 = gl.to_tensor(r0)
        h = gl.to_tensor(h)
        s0 = gl.to_tensor(s0)
        s1 = gl.to_tensor(s1)
        wf = gl.to_tensor(wf)
        n_tb = gl.to_tensor(n_tb)
        n_it = gl.to_tensor(n_it)
        L = gl.to_tensor(L)
        H = gl.to_tensor(H)
        D = gl.to_tensor(D)
        rt = (t1d, t2d, lse_ptr, delta_ptr, g1_ptr, g2_ptr, h1_smem, h2_smem, t1_smem, t2_smem,
              h_bar, ready, empty, turn, n, r0, h, s0, s1, wf, n_tb, n_it, L, H, D, qk_scale, scale)
        if NWG == 3:
            gl.warp_specialize([
                (_consumer, (rt, 0, NWG, DQ, LAG, BLOCK_D, BLOCK_N, STAGES, DA, QB, VB, TURN)),
                (_consumer, (rt, 1, NWG, DQ, LAG, BLOCK_D, BLOCK_N, STAGES, DA, QB, VB, TURN)),
                (_consumer, (rt, 2, NWG, DQ, LAG, BLOCK_D, BLOCK_N, STAGES, DA, QB, VB, TURN)),
            ], [4, 4], [REGS, REGS])
        else:   # the dk/dv part: two groups with more registers each
            gl.warp_specialize([
                (_consumer, (rt, 0, NWG, DQ, LAG, BLOCK_D, BLOCK_N, STAGES, DA, QB, VB, TURN)),
                (_consumer, (rt, 1, NWG, DQ, LAG, BLOCK_D, BLOCK_N, STAGES, DA, QB, VB, TURN)),
            ], [4], [REGS])


def spatial_attention_bwd_hopper(dout, q, k, v, lse, delta, dq, dk, dv, num_frames: int,
                                 scale: float) -> None:
    """Fill dq, dk, dv ((B*F, L, H, D) contiguous, q's dtype) for tensors :func:`supported`
    accepts; ``lse`` and ``delta`` (B*F, H, L) fp32 as in ``spatial_attention``."""
    n, l, h, d = q.shape
    plan = HeadDimPlan(d)
    for dq_part, (held, streamed, g1, g2) in ((0, ((k, v), (q, dout), dk, dv)),
                                              (1, ((q, dout), (k, v), dq, dq))):
        h1, h2 = (plan.desc(t, ROWS) for t in held)
        t1, t2 = (plan.desc(t, BLOCK_N[dq_part]) for t in streamed)
        grid = (n * h * triton.cdiv(l, GROUPS[dq_part] * ROWS),)
        _spatial_bwd_hopper_kernel[grid](
            h1, h2, t1, t2, lse, delta, g1, g2, n, l, h, num_frames, d,
            scale * 1.4426950408889634, scale,
            DQ=dq_part, NWG=GROUPS[dq_part], BLOCK_N=BLOCK_N[dq_part], STAGES=STAGES[dq_part],
            LAG=LAG[dq_part], REGS=REGS[dq_part], TURN=TURN[dq_part], num_warps=4,
            **plan.constexprs())
