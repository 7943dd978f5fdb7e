"""Triton kernels of first-adjacent attention, mode="temporal" (DESIGN.md §1a).

Forward: one program per (clip, token block, head block, frame), with the frame index fastest in
the grid, so the F programs that read a clip's frame-0 tile run together and its re-reads are L2
hits: HBM sees each element of q, k, v once and each output element written once (the floor).
Each program loads q[f], k/v[prev(f)] and k/v[0] tiles of shape [BLOCK_L, BLOCK_H, BLOCK_D],
computes the two-key softmax in fp32 and stores out[f]. Nothing is rearranged or stacked; q/k/v are
read through their strides (views of a packed qkv projection work as they are), offsets are int64,
and 16-byte vector loads are enabled when strides and pointers are aligned.

Backward (recompute, nothing saved but q, k, v): per frame f the gradient of the prev key goes to
frame ``prev(f)`` and that of the first key to frame 0. Frames ``g >= 1`` receive only the prev
contribution of frame ``g+1``, so they are written directly; frame 0 receives every frame's first
contribution plus the prev contributions of frames 0 and 1, accumulated in fp32 registers while a
program walks a chunk of frames. With one chunk per clip it is written at the end; with several
(when the clips alone give too few programs) each chunk's partial sum goes to an fp32 buffer that
is reduced in a fixed order. No atomics: the backward is deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._alloc import empty
from ..backends import register_impl, triton_interpret
from ._host import cdiv, next_power_of_2


@triton.jit
def _tile_offsets(l0, h0, L, H, stride_l, stride_h, D: tl.constexpr, VEC: tl.constexpr,
                  BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """int64 offsets (inside one frame) and mask of a [BLOCK_L, BLOCK_H, BLOCK_D] tile.

    D is a compile-time constant so the head-dim mask is known in groups of VEC elements; VEC > 1
    (set by the host only when every stride and base pointer is VEC-aligned) lets the compiler
    issue 16-byte loads even for head dims like 40 that are not multiples of 16."""
    offs_l = l0 + tl.arange(0, BLOCK_L)
    offs_h = h0 + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    row = offs_l.to(tl.int64)[:, None, None] * stride_l + offs_h.to(tl.int64)[None, :, None] * stride_h
    if VEC > 1:
        row = tl.multiple_of(row, [VEC, VEC, VEC])
    off = row + offs_d[None, None, :]
    mask = (offs_l < L)[:, None, None] & (offs_h < H)[None, :, None] & (offs_d < D)[None, None, :]
    return off, mask


@triton.jit
def _two_key_probs(q, k_prev, k_first, scale):
    """Softmax weights of the two keys, fp32, shape [BLOCK_L, BLOCK_H, 1] each."""
    s_prev = tl.sum(q * k_prev, axis=2) * scale
    s_first = tl.sum(q * k_first, axis=2) * scale
    m = tl.maximum(s_prev, s_first)
    e_prev = tl.exp(s_prev - m)
    e_first = tl.exp(s_first - m)
    inv = 1.0 / (e_prev + e_first)
    return (e_prev * inv)[:, :, None], (e_first * inv)[:, :, None]


@triton.jit
def _temporal_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,
    sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h, so_n, so_l, so_h,
    L, H, F, scale,
    D: tl.constexpr, VEC: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Axis 0 enumerates (clip, token block, frame) with the frame fastest: the F programs that
    # read a clip's frame-0 tile run together, so its re-reads hit L2 and HBM sees each input once.
    pid = tl.program_id(0)
    f = pid % F
    rest = pid // F
    n_lblocks = tl.cdiv(L, BLOCK_L)
    l0 = (rest % n_lblocks) * BLOCK_L
    clip = (rest // n_lblocks).to(tl.int64) * F
    h0 = tl.program_id(1) * BLOCK_H
    q_off, mask = _tile_offsets(l0, h0, L, H, sq_l, sq_h, D, VEC, BLOCK_L, BLOCK_H, BLOCK_D)
    k_off, _ = _tile_offsets(l0, h0, L, H, sk_l, sk_h, D, VEC, BLOCK_L, BLOCK_H, BLOCK_D)
    v_off, _ = _tile_offsets(l0, h0, L, H, sv_l, sv_h, D, VEC, BLOCK_L, BLOCK_H, BLOCK_D)
    o_off, _ = _tile_offsets(l0, h0, L, H, so_l, so_h, D, VEC, BLOCK_L, BLOCK_H, BLOCK_D)

    n = clip + f
    p = clip + tl.maximum(f - 1, 0)
    q = tl.load(q_ptr + n * sq_n + q_off, mask=mask, other=0.0).to(tl.float32)
    k_prev = tl.load(k_ptr + p * sk_n + k_off, mask=mask, other=0.0).to(tl.float32)
    v_prev = tl.load(v_ptr + p * sv_n + v_off, mask=mask, other=0.0).to(tl.float32)
    k_first = tl.load(k_ptr + clip * sk_n + k_off, mask=mask, other=0.0).to(tl.float32)
    v_first = tl.load(v_ptr + clip * sv_n + v_off, mask=mask, other=0.0).to(tl.float32)
    w_prev, w_first = _two_key_probs(q, k_prev, k_first, scale)
    out = w_prev * v_prev + w_first * v_first
    tl.store(o_ptr + n * so_n + o_off, out.to(o_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _temporal_bwd_kernel(
    do_ptr, q_ptr, k_ptr, v_ptr, dq_ptr, dk_ptr, dv_ptr, part_ptr,
    sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
    sg_n, sg_l, sg_h,   # strides of dq, dk, dv (all contiguous, same shape)
    L, H, F, scale, CHUNK, n_clips,
    D: tl.constexpr, VEC: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Axis 0: (clip, token block); axis 1: head block; axis 2: chunk of CHUNK query frames.
    pid = tl.program_id(0)
    n_lblocks = tl.cdiv(L, BLOCK_L)
    l0 = (pid % n_lblocks) * BLOCK_L
    clip_idx = pid // n_lblocks
    clip = clip_idx.to(tl.int64) * F
    h0 = tl.program_id(1) * BLOCK_H
    chunk = tl.program_id(2)
    f_start = chunk * CHUNK
    f_end = tl.minimum(f_start + CHUNK, F)
    do_off, mask = _tile_offsets(l0, h0, L, H, sdo_l, sdo_h, D, VEC, BLOCK_L, BLOCK_H, BLOCK_D)
    q_off, _ = _tile_offsets(l0, h0, L, H, sq_l, sq_h, D, VEC, BLOCK_L, BLOCK_H, BLOCK_D)
    k_off, _ = _tile_offsets(l0, h0, L, H, sk_l, sk_h, D, VEC, BLOCK_L, BLOCK_H, BLOCK_D)
    v_off, _ = _tile_offsets(l0, h0, L, H, sv_l, sv_h, D, VEC, BLOCK_L, BLOCK_H, BLOCK_D)
    g_off, _ = _tile_offsets(l0, h0, L, H, sg_l, sg_h, D, VEC, BLOCK_L, BLOCK_H, BLOCK_D)
    out_ty = dq_ptr.dtype.element_ty

    k_first = tl.load(k_ptr + clip * sk_n + k_off, mask=mask, other=0.0).to(tl.float32)
    v_first = tl.load(v_ptr + clip * sv_n + v_off, mask=mask, other=0.0).to(tl.float32)
    dk_first = tl.zeros_like(k_first)
    dv_first = tl.zeros_like(v_first)
    for f in range(f_start, f_end):
        n = clip + f
        p = clip + tl.maximum(f - 1, 0)
        q = tl.load(q_ptr + n * sq_n + q_off, mask=mask, other=0.0).to(tl.float32)
        do = tl.load(do_ptr + n * sdo_n + do_off, mask=mask, other=0.0).to(tl.float32)
        k_prev = tl.load(k_ptr + p * sk_n + k_off, mask=mask, other=0.0).to(tl.float32)
        v_prev = tl.load(v_ptr + p * sv_n + v_off, mask=mask, other=0.0).to(tl.float32)
        w_prev, w_first = _two_key_probs(q, k_prev, k_first, scale)
        dp_prev = tl.sum(do * v_prev, axis=2)[:, :, None]
        dp_first = tl.sum(do * v_first, axis=2)[:, :, None]
        delta = w_prev * dp_prev + w_first * dp_first
        ds_prev = w_prev * (dp_prev - delta) * scale
        ds_first = w_first * (dp_first - delta) * scale
        dq = ds_prev * k_prev + ds_first * k_first
        tl.store(dq_ptr + n * sg_n + g_off, dq.to(out_ty), mask=mask)

        dk_prev = ds_prev * q
        dv_prev = w_prev * do
        prev_is_first = f <= 1
        dk_first += ds_first * q + tl.where(prev_is_first, dk_prev, 0.0)
        dv_first += w_first * do + tl.where(prev_is_first, dv_prev, 0.0)
        # frame f-1 >= 1 receives exactly this one contribution
        tl.store(dk_ptr + p * sg_n + g_off, dk_prev.to(out_ty), mask=mask & (f >= 2))
        tl.store(dv_ptr + p * sg_n + g_off, dv_prev.to(out_ty), mask=mask & (f >= 2))

    if SPLIT:  # frame 0's partial sums of this chunk -> fp32 buffer (n_chunks, 2, clips, L, H, D)
        part_off = (((chunk * 2 * n_clips + clip_idx).to(tl.int64) * L) * H) * D
        loc = _dense_offsets(l0, h0, L, H, D, BLOCK_L, BLOCK_H, BLOCK_D)
        tl.store(part_ptr + part_off + loc, dk_first, mask=mask)
        tl.store(part_ptr + part_off + n_clips * L * H * D + loc, dv_first, mask=mask)
    else:
        tl.store(dk_ptr + clip * sg_n + g_off, dk_first.to(out_ty), mask=mask)
        tl.store(dv_ptr + clip * sg_n + g_off, dv_first.to(out_ty), mask=mask)
    # the last frame's keys/values are nobody's prev: zero gradient (written by the last chunk)
    last = clip + F - 1
    zero = tl.zeros_like(dk_first).to(out_ty)
    is_last_chunk = f_end == F
    tl.store(dk_ptr + last * sg_n + g_off, zero, mask=mask & (F >= 2) & is_last_chunk)
    tl.store(dv_ptr + last * sg_n + g_off, zero, mask=mask & (F >= 2) & is_last_chunk)


@triton.jit
def _dense_offsets(l0, h0, L, H, D: tl.constexpr,
                   BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """Offsets of the tile in a dense (L, H, D) array."""
    offs_l = l0 + tl.arange(0, BLOCK_L)
    offs_h = h0 + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    return (offs_l.to(tl.int64)[:, None, None] * (H * D) + offs_h[None, :, None] * D
            + offs_d[None, None, :])


# Launch heuristics (benchmarks/sweep_temporal.py measures alternatives on the GPU):
_TILE = 1024          # elements of one [BLOCK_L, BLOCK_H, BLOCK_D] tile (fp32 in registers)
_TARGET_PROGRAMS = 1024   # backward: split frames into chunks until about this many programs
_FWD_WARPS = 4
_BWD_WARPS = 4


def _blocks(l: int, h: int, d: int):
    """BLOCK_D covers the head dim (padded to a power of two, masked); BLOCK_H heads share a tile
    so one tile spans up to 128 channels of a token row; BLOCK_L fills the tile."""
    block_d = max(16, next_power_of_2(d))
    block_h = max(1, min(next_power_of_2(h), 128 // block_d))
    block_l = max(1, min(next_power_of_2(l), _TILE // (block_h * block_d)))
    if triton_interpret():
        block_l = min(block_l, 4)
    return block_l, block_h, block_d


def _vec(*tensors) -> int:
    """Elements per 16-byte vector when every base pointer and stride allows such loads, else 1."""
    vec = 16 // tensors[0].element_size()
    for t in tensors:
        if t.data_ptr() % 16 or any(s % vec for s in t.stride()[:-1]):
            return 1
    return vec


def temporal_attention_fwd(q, k, v, num_frames: int, scale: float):
    """out (B*F, L, H, D) contiguous; see the module docstring."""
    n, l, h, d = q.shape
    out = empty((n, l, h, d), q.dtype, q.device)
    block_l, block_h, block_d = _blocks(l, h, d)
    grid = (n * cdiv(l, block_l), cdiv(h, block_h))
    _temporal_fwd_kernel[grid](
        q, k, v, out,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        l, h, num_frames, scale, D=d, VEC=_vec(q, k, v, out),
        BLOCK_L=block_l, BLOCK_H=block_h, BLOCK_D=block_d, num_warps=_FWD_WARPS)
    return out


def temporal_attention_bwd(dout, q, k, v, num_frames: int, scale: float):
    """(dq, dk, dv), each (B*F, L, H, D) contiguous in q's dtype.

    Frames are split into chunks when the clips alone give too few programs; frame 0's gradient
    is then summed from per-chunk fp32 partials in a fixed order (deterministic)."""
    n, l, h, d = q.shape
    dq, dk, dv = (empty((n, l, h, d), q.dtype, q.device) for _ in range(3))
    block_l, block_h, block_d = _blocks(l, h, d)
    clips = n // num_frames
    programs = clips * cdiv(l, block_l) * cdiv(h, block_h)
    n_chunks = max(1, min(num_frames, cdiv(_TARGET_PROGRAMS, programs)))
    chunk = cdiv(num_frames, n_chunks)
    n_chunks = cdiv(num_frames, chunk)
    split = n_chunks > 1
    part = (empty((n_chunks, 2, clips, l, h, d), torch.float32, q.device) if split
            else dq)  # unused placeholder pointer when not split
    grid = (clips * cdiv(l, block_l), cdiv(h, block_h), n_chunks)
    _temporal_bwd_kernel[grid](
        dout, q, k, v, dq, dk, dv, part,
        dout.stride(0), dout.stride(1), dout.stride(2), q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        dq.stride(0), dq.stride(1), dq.stride(2),
        l, h, num_frames, scale, chunk, clips, D=d, VEC=_vec(dout, q, k, v, dq), SPLIT=split,
        BLOCK_L=block_l, BLOCK_H=block_h, BLOCK_D=block_d, num_warps=_BWD_WARPS)
    if split:
        first = part.sum(dim=0).to(q.dtype)          # (2, clips, L, H, D), fixed-order reduction
        dk.view(clips, num_frames, l, h, d)[:, 0] = first[0]
        dv.view(clips, num_frames, l, h, d)[:, 0] = first[1]
    return dq, dk, dv


register_impl("temporal_attention_fwd", "triton", temporal_attention_fwd)
register_impl("temporal_attention_bwd", "triton", temporal_attention_bwd)
