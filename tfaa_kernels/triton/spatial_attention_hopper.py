"""Hopper (sm_90) forward of first-adjacent attention, mode="spatial", in Gluon (DESIGN.md §1a).

Same semantics, inputs and outputs as ``spatial_attention._spatial_fwd_kernel`` (out in q's dtype,
natural-log LSE with the ``ln 2`` of frames 0 and 1, see that module), for the shapes it is built
for: 16-bit q/k/v with head dims <= 64 whose tensors qualify for TMA descriptors. SD's 64x64
latent blocks (D = 40) are the case it exists for (S1, H100: 4.43 ms vs 4.89 ms for the Triton
kernel in the same process, RESULTS.md Session 17; 4.23 ms with the Session 18 changes below).

Why a second kernel. At D <= 64 the forward is bounded by two units in equal measure: the
exponentials on the special-function unit (16 per SM per clock) and the two matmuls at the padded
head dim 64 on the tensor cores, each ~2.2 ms at S1. Triton's ``tl.dot`` waits for every Q K^T
before the softmax that reads it, and its warp specialization does not run on Hopper in Triton 3.6,
so the two units take turns. Gluon (Triton's lower-level dialect) exposes the pieces FlashAttention-3
uses: asynchronous wgmma, mbarriers and warp-specialized partitions.

Structure (FlashAttention-3 style "ping-pong", without a producer warp):
- A CTA owns 3 x 64 query rows of one frame and head, one consumer warp group (4 warps, 64 rows,
  wgmma's M) each; one CTA per SM. Three groups, not two: with two, each scheduler has one warp in
  its softmax and its dependent max/sum chains stall it (S1 5.15 ms).
- K/V tiles (128 keys) stream through a 5-slot TMA ring (the copy engine zero-fills rows past L
  and columns past D): the first 5 are loaded before the groups start; group 0 refills the slot
  of tile j-3 in iteration j, once all three groups have released it (``empty``, count 3).
- In iteration j a group issues Q K_j^T and P_{j-1} V_{j-1} together, waits for both, then runs
  the softmax of tile j (which also rescales the output accumulator). Tensor-core time is handed
  from group to group with one mbarrier per group (``turn``): a group issues its matmuls only when
  the previous group's have completed, so the matmuls run back to back while the other two groups
  are in their softmax (S1 4.43 ms; handing over at issue instead of completion 4.57 ms).
- Head dims 33..48 (SD's 40) run Q K^T at K = 48 and P V at N = 40 or 48 (two wgmmas each over
  slices of the 64-wide shared tiles) instead of the padded 64: a quarter fewer tensor-core cycles.
- The row max is a tree over each thread's 64 scores (pairs, then halves) instead of one chain.
- The four TMA descriptors are built on the host and passed as kernel parameters; building them in
  the kernel (global-memory tensormap writes and proxy fences) kept every CTA ~8% of its lifetime
  in its prologue (ncu, S18-run 1). Together: S1 4.43 -> 4.23 ms (S18-run 7).
Frames 0 and 1 stream frame 0's keys once (the duplicate copy is the ``ln 2`` in the LSE), like the
Triton kernel.
"""
from __future__ import annotations

import torch
import triton

from ..backends import triton_interpret
from .spatial_attention import _query_block, _tma_ok

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait)
except ImportError:  # pragma: no cover - Triton without Gluon
    GLUON = False
else:
    GLUON = True

# Set to False to run the Triton kernel instead (tests compare both on the same shapes).
_ENABLED = True

ROWS = 64          # query rows per consumer warp group (wgmma's M)
GROUPS = 3         # consumer warp groups per CTA
BLOCK_N = 128      # keys per K/V tile
STAGES = 5         # K/V ring slots
LAG = 3            # group 0 refills the slot of tile j - LAG in iteration j
REGS = 160         # registers per thread of the worker groups (3 x 128 threads x 168 <= 64 K)
MAX_D = 64


def supported(q, k, v) -> bool:
    """Whether this kernel runs the forward of these (B*F, L, H, D) tensors: an sm_90 GPU (wgmma is
    sm_90a only), Gluon available, fp16/bf16, D <= 64, all three readable through TMA descriptors
    (16-byte aligned base and strides, channels contiguous)."""
    return (_ENABLED and GLUON and not triton_interpret() and q.is_cuda
            and torch.cuda.get_device_capability(q.device) == (9, 0)
            and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= MAX_D
            and _tma_ok(q, k, v))


if GLUON:
    _ROWS = gl.constexpr(ROWS)

    @gluon.jit
    def _ring_barriers(STAGES: gl.constexpr, NWG: gl.constexpr):
        """The initialised mbarriers of a CTA's TMA ring and turn-taking: ``ready[s]`` (slot s's
        tiles have landed: one expect-tx arrival), ``empty[s]`` (all NWG consumer groups are done
        with slot s), ``turn[g]`` (group g may issue its matmuls; group 0's first turn is given).
        Barriers initialised before the call are fenced with these. (Also used by the Gluon
        backward of spatial_attention_hopper_bwd.)"""
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        turn = gl.allocate_shared_memory(gl.int64, [NWG, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(ready.index(i), count=1)
            mbarrier.init(empty.index(i), count=NWG)      # one arrive per consumer group
        for i in gl.static_range(NWG):
            mbarrier.init(turn.index(i), count=1)
        fence_async_shared()
        mbarrier.arrive(turn.index(0), count=1)           # group 0's matmuls go first
        return ready, empty, turn

    @gluon.jit
    def _load_tiles(ad, bd, a_smem, b_smem, ready, t, n_it, n_tb, s0, s1, h,
                    PREV_FIRST: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
        """TMA of streamed tile t of two tensors (descriptors ad, bd: K and V in the forward) into
        ring slot t % STAGES, completing ``ready[slot]``; nothing past the last tile (t >= n_it).
        PREV_FIRST: the n_tb tiles of frame row s0 (prev(f)), then those of s1 (the clip's frame
        0; n_it = n_tb when frame 0 is streamed once); otherwise those of frames s0, s0 + 1, ...
        (the dk/dv part of spatial_attention_hopper_bwd, which uses this too)."""
        slot = t % STAGES
        if PREV_FIRST:
            on_s0 = (t < n_it - n_tb).to(gl.int32)
            fn = s1 + on_s0 * (s0 - s1)
        else:
            fn = s0 + t // n_tb
        r0 = (t % n_tb) * BLOCK_N
        pred = t < n_it
        bar = ready.index(slot)
        mbarrier.expect(bar, ad.block_type.nbytes + bd.block_type.nbytes, pred=pred)
        tma.async_copy_global_to_shared(ad, [fn, r0, h, 0], bar, a_smem.index(slot), pred=pred)
        tma.async_copy_global_to_shared(bd, [fn, r0, h, 0], bar, b_smem.index(slot), pred=pred)

    @gluon.jit
    def _row_max(s):
        """Row maxima of a [64, N] wgmma accumulator (N = 128) as a tree instead of one dependent
        chain per row: each thread holds 2 rows x N/4 scores in adjacent-column pairs (the pair is
        a register pair, the high column bits are register bits); max the pairs, halve the rest
        three times, then reduce the 2 + 2 that are left and across the 4 lanes of a row."""
        even, odd = s.reshape([s.shape[0], s.shape[1] // 2, 2]).split()
        t = gl.maximum(even, odd)
        for _ in gl.static_range(3):
            lo, hi = t.reshape([t.shape[0], 2, t.shape[1] // 2]).permute((0, 2, 1)).split()
            t = gl.maximum(lo, hi)
        return gl.max(t, 1)

    @gluon.jit
    def _softmax_step(s, j, m_i, l_i, o, ob, n_kb, L, qk_scale, s_l: gl.constexpr,
                      o_l: gl.constexpr, ob_l: gl.constexpr, p_l: gl.constexpr,
                      dtype: gl.constexpr, BLOCK_N: gl.constexpr, EVEN_L: gl.constexpr,
                      VB: gl.constexpr):
        """Online softmax of score tile j ([64, BLOCK_N] fp32, unscaled): the new row max (log2
        units), row sum, rescaled output accumulators (o, and ob when the head dim is split) and
        P in the wgmma A-operand layout."""
        if not EVEN_L:
            cols = (j % n_kb) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_l))
            s = gl.where(gl.expand_dims(cols < L, 0), s, float("-inf"))
        m_new = gl.maximum(m_i, gl.convert_layout(_row_max(s), m_i.type.layout) * qk_scale)
        p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
        alpha = gl.exp2(m_i - m_new)
        l_i = l_i * alpha + gl.sum(p, 1)
        o = o * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_l)), 1)
        if VB > 0:
            ob = ob * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, ob_l)), 1)
        return m_new, l_i, o, ob, gl.convert_layout(p.to(dtype), p_l)

    @gluon.jit
    def _qk(q, k_tile, zero_s, BLOCK_N: gl.constexpr, BLOCK_D: gl.constexpr, DA: gl.constexpr,
            QB: gl.constexpr):
        """Issue S = Q K^T (async) over the first DA + QB head-dim columns of the shared tiles."""
        kt = k_tile.reshape([BLOCK_N, BLOCK_D])
        if QB > 0:
            s = warpgroup_mma(q.slice(0, DA, dim=1), kt.slice(0, DA, dim=1).permute((1, 0)),
                              zero_s, use_acc=False, is_async=True)
            s = warpgroup_mma(q.slice(DA, QB, dim=1), kt.slice(DA, QB, dim=1).permute((1, 0)), s,
                              is_async=True)
        else:
            s = warpgroup_mma(q, kt.permute((1, 0)), zero_s, use_acc=False, is_async=True)
        return s

    @gluon.jit
    def _pv(p16, v_tile, o, ob, pb_l: gl.constexpr, BLOCK_N: gl.constexpr,
            BLOCK_D: gl.constexpr, DA: gl.constexpr, VB: gl.constexpr):
        """Issue O += P V (async): columns [0, DA) into o and, when split, [DA, DA + VB) into ob."""
        vt = v_tile.reshape([BLOCK_N, BLOCK_D])
        if VB > 0:
            o = warpgroup_mma(p16, vt.slice(0, DA, dim=1), o, is_async=True)
            ob = warpgroup_mma(gl.convert_layout(p16, pb_l), vt.slice(DA, VB, dim=1), ob,
                               is_async=True)
        else:
            o = warpgroup_mma(p16, vt, o, is_async=True)
        return o, ob

    @gluon.jit
    def _consumer(qd, kd, vd, od, lse_ptr, q_smem, k_smem, v_smem, q_bar, ready, empty, turn,
                  n, m0, h, f, first, prev, n_it, n_kb, nh, L, qk_scale,
                  WG: gl.constexpr, NWG: gl.constexpr, LAG: gl.constexpr, BLOCK_D: gl.constexpr,
                  BLOCK_N: gl.constexpr, STAGES: gl.constexpr, EVEN_L: gl.constexpr,
                  DA: gl.constexpr, QB: gl.constexpr, VB: gl.constexpr):
        """Warp group WG: query rows m0 + 64 WG .. + 64 of frame n, head h. With QB > 0 the head
        dim is split: Q K^T over columns [0, DA) and [DA, DA + QB), O over [0, DA) in o and
        [DA, DA + VB) in ob; otherwise everything at BLOCK_D (= DA)."""
        dtype: gl.constexpr = q_smem.dtype
        s_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, BLOCK_N, 16])
        o_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, DA, 16])
        NB: gl.constexpr = VB if VB > 0 else 8   # ob is a [64, 8] placeholder when not split
        ob_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, NB, 16])
        p_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_l, k_width=2)
        pb_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=ob_l, k_width=2)
        row_o: gl.constexpr = gl.SliceLayout(1, o_l)
        q = q_smem.index(WG).reshape([_ROWS, BLOCK_D])
        zero_s = gl.zeros([_ROWS, BLOCK_N], gl.float32, s_l)
        o = gl.zeros([_ROWS, DA], gl.float32, o_l)
        ob = gl.zeros([_ROWS, NB], gl.float32, ob_l)
        m_i = gl.full([_ROWS], float("-inf"), gl.float32, gl.SliceLayout(1, s_l))
        l_i = gl.zeros([_ROWS], gl.float32, gl.SliceLayout(1, s_l))
        mine = turn.index(WG)
        nxt = turn.index((WG + 1) % NWG)

        mbarrier.wait(q_bar, 0)
        # tile 0: scores only (no P V yet)
        mbarrier.wait(ready.index(0), 0)
        mbarrier.wait(mine, 0)
        s_tok = _qk(q, k_smem.index(0), zero_s, BLOCK_N, BLOCK_D, DA, QB)
        s = warpgroup_mma_wait(0, deps=(s_tok,))
        mbarrier.arrive(nxt, count=1)
        m_i, l_i, o, ob, p16 = _softmax_step(s, 0, m_i, l_i, o, ob, n_kb, L, qk_scale, s_l, o_l,
                                             ob_l, p_l, dtype, BLOCK_N, EVEN_L, VB)
        for j in range(1, n_it):
            slot = j % STAGES
            pslot = (j - 1) % STAGES
            mbarrier.wait(ready.index(slot), (j // STAGES) & 1)
            mbarrier.wait(mine, j & 1)
            s_tok = _qk(q, k_smem.index(slot), zero_s, BLOCK_N, BLOCK_D, DA, QB)
            o, ob = _pv(p16, v_smem.index(pslot), o, ob, pb_l, BLOCK_N, BLOCK_D, DA, VB)
            s, o, ob = warpgroup_mma_wait(0, deps=(s_tok, o, ob))
            mbarrier.arrive(nxt, count=1)                   # the next group's matmuls may go
            mbarrier.arrive(empty.index(pslot), count=1)    # this group is done with tile j-1
            if WG == 0:
                if j >= LAG:
                    t = j - LAG
                    mbarrier.wait(empty.index(t % STAGES), (t // STAGES) & 1)
                    _load_tiles(kd, vd, k_smem, v_smem, ready, t + STAGES, n_it, n_kb, prev,
                                first, h, True, BLOCK_N, STAGES)
            m_i, l_i, o, ob, p16 = _softmax_step(s, j, m_i, l_i, o, ob, n_kb, L, qk_scale, s_l,
                                                 o_l, ob_l, p_l, dtype, BLOCK_N, EVEN_L, VB)
        o, ob = _pv(p16, v_smem.index((n_it - 1) % STAGES), o, ob, pb_l, BLOCK_N, BLOCK_D, DA, VB)
        o, ob = warpgroup_mma_wait(0, deps=(o, ob))

        # epilogue: O / l through this group's (now free) Q buffer and TMA (rows >= L clipped)
        l_o = gl.convert_layout(l_i, row_o)
        if VB > 0:
            q.slice(0, DA, dim=1).store((o / gl.expand_dims(l_o, 1)).to(dtype))
            l_b = gl.convert_layout(l_i, gl.SliceLayout(1, ob_l))
            q.slice(DA, VB, dim=1).store((ob / gl.expand_dims(l_b, 1)).to(dtype))
        else:
            q.store((o / gl.expand_dims(l_o, 1)).to(dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(od, [n, m0 + WG * _ROWS, h, 0], q_smem.index(WG))
        dup = gl.where(f <= 1, 1.0, 0.0)
        lse = (gl.convert_layout(m_i, row_o) + gl.log2(l_o) + dup) * 0.6931471805599453
        rows = m0 + WG * _ROWS + gl.arange(0, _ROWS, layout=row_o)
        gl.store(lse_ptr + nh.to(gl.int64) * L + rows, lse, mask=rows < L)
        tma.store_wait(0)

    @gluon.jit
    def _spatial_fwd_hopper_kernel(
            qd, kd, vd, od, lse_ptr, L, H, F, qk_scale,
            BLOCK_D: gl.constexpr, EVEN_L: gl.constexpr, NWG: gl.constexpr, BLOCK_N: gl.constexpr,
            STAGES: gl.constexpr, LAG: gl.constexpr, REGS: gl.constexpr, DA: gl.constexpr,
            QB: gl.constexpr, VB: gl.constexpr):
        """Program -> (row n = b*F + f, head h, block of NWG * 64 query rows); see the module
        docstring. qd/od: descriptors of q/out over (B*F, L, H, D) with [1, 64, 1, BLOCK_D] boxes,
        kd/vd with [1, BLOCK_N, 1, BLOCK_D] boxes. ``qk_scale`` = softmax scale * log2(e)."""
        gl.static_assert(NWG == 3, "three consumer warp groups")
        gl.static_assert(STAGES >= LAG + 2, "the ring refills tile j-LAG's slot in iteration j")
        dtype: gl.constexpr = qd.dtype
        m0, nh, h, n, f, first, prev = _query_block(gl.program_id(0), L, H, F, NWG * _ROWS)

        smem_l: gl.constexpr = qd.layout
        q_smem = gl.allocate_shared_memory(dtype, [NWG, 1, _ROWS, 1, BLOCK_D], smem_l)
        k_smem = gl.allocate_shared_memory(dtype, [STAGES, 1, BLOCK_N, 1, BLOCK_D], smem_l)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, 1, BLOCK_N, 1, BLOCK_D], smem_l)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        ready, empty, turn = _ring_barriers(STAGES, NWG)

        n_kb = gl.cdiv(L, BLOCK_N)
        n_it = gl.where(f >= 2, 2 * n_kb, n_kb)          # frames 0, 1: frame 0 once
        mbarrier.expect(q_bar, NWG * qd.block_type.nbytes)
        for i in gl.static_range(NWG):
            tma.async_copy_global_to_shared(qd, [n, m0 + i * _ROWS, h, 0], q_bar, q_smem.index(i))
        for i in gl.static_range(STAGES):
            _load_tiles(kd, vd, k_smem, v_smem, ready, i, n_it, n_kb, prev, first, h, True,
                        BLOCK_N, STAGES)

        # worker partitions take scalars as tensors (an int argument equal to 1 is a constexpr)
        n = gl.to_tensor(n)
        m0 = gl.to_tensor(m0)
        h = gl.to_tensor(h)
        f = gl.to_tensor(f)
        first = gl.to_tensor(first)
        prev = gl.to_tensor(prev)
        n_it = gl.to_tensor(n_it)
        n_kb = gl.to_tensor(n_kb)
        nh = gl.to_tensor(nh)
        L = gl.to_tensor(L)
        gl.warp_specialize([
            (_consumer, (qd, kd, vd, od, lse_ptr, q_smem, k_smem, v_smem, q_bar, ready, empty, turn,
                         n, m0, h, f, first, prev, n_it, n_kb, nh, L, qk_scale,
                         0, NWG, LAG, BLOCK_D, BLOCK_N, STAGES, EVEN_L, DA, QB, VB)),
            (_consumer, (qd, kd, vd, od, lse_ptr, q_smem, k_smem, v_smem, q_bar, ready, empty, turn,
                         n, m0, h, f, first, prev, n_it, n_kb, nh, L, qk_scale,
                         1, NWG, LAG, BLOCK_D, BLOCK_N, STAGES, EVEN_L, DA, QB, VB)),
            (_consumer, (qd, kd, vd, od, lse_ptr, q_smem, k_smem, v_smem, q_bar, ready, empty, turn,
                         n, m0, h, f, first, prev, n_it, n_kb, nh, L, qk_scale,
                         2, NWG, LAG, BLOCK_D, BLOCK_N, STAGES, EVEN_L, DA, QB, VB)),
        ], [4, 4], [REGS, REGS])


class HeadDimPlan:
    """How the Gluon kernels run head dim ``d``: shared tiles ``block_d`` wide (a power of two,
    >= 16, zero-filled past d by the copy engine), products over the head dim at K = DA + QB and
    accumulators at N = DA (+ VB). 32 < d <= 48: K = 48 and N = 40 / 48 over slices of the 64-wide
    tiles (QB, VB > 0); otherwise everything at block_d (QB = VB = 0)."""

    def __init__(self, d: int):
        self.block_d = max(16, triton.next_power_of_2(d))
        self.da, self.qb, self.vb = ((32, 16, 8 if d <= 40 else 16) if 32 < d <= 48
                                     else (self.block_d, 0, 0))
        self.layout = gl.NVMMASharedLayout(swizzle_byte_width=min(128, 2 * self.block_d),
                                           element_bitwidth=16, rank=4)

    def desc(self, t, rows: int):
        """Host TMA descriptor of a (B*F, L, H, D) tensor with [1, rows, 1, block_d] boxes."""
        return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, rows, 1, self.block_d],
                                self.layout)

    def constexprs(self) -> dict:
        return {"BLOCK_D": self.block_d, "DA": self.da, "QB": self.qb, "VB": self.vb}


def spatial_attention_fwd_hopper(q, k, v, out, lse, num_frames: int, scale: float) -> None:
    """Fill ``out`` ((B*F, L, H, D) contiguous, q's dtype) and ``lse`` ((B*F, H, L) fp32) for
    q, k, v that :func:`supported` accepts."""
    n, l, h, d = q.shape
    plan = HeadDimPlan(d)
    grid = (n * h * triton.cdiv(l, GROUPS * ROWS),)
    _spatial_fwd_hopper_kernel[grid](
        plan.desc(q, ROWS), plan.desc(k, BLOCK_N), plan.desc(v, BLOCK_N), plan.desc(out, ROWS), lse,
        l, h, num_frames, scale * 1.4426950408889634,
        EVEN_L=l % BLOCK_N == 0, NWG=GROUPS, BLOCK_N=BLOCK_N, STAGES=STAGES,
        LAG=LAG, REGS=REGS, num_warps=4, **plan.constexprs())
