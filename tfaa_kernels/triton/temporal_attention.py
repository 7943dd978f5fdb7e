"""Triton kernels of first-adjacent attention, mode="temporal" (DESIGN.md §1a).

Each program owns one clip ``b``, a block of tokens and a block of heads, and walks the clip's
frames in order. Frame 0's keys/values stay in registers for the whole clip, so every element of
q, k, v and dout is read once from HBM and every output element written once: the op runs at the
memory floor (read q, k, v + write out). Nothing is rearranged or stacked; q/k/v are read through
their strides (views of a packed qkv projection work as they are), offsets are int64.

Backward (recompute, nothing saved but q, k, v): per frame f the gradient of the prev key goes to
frame ``prev(f)`` and that of the first key to frame 0. Frames ``g >= 1`` receive only the prev
contribution of frame ``g+1``, so they are written directly; frame 0 receives every frame's first
contribution plus the prev contributions of frames 0 and 1, accumulated in fp32 registers and
written once at the end. No atomics: the backward is deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._alloc import empty
from ..backends import register_impl, triton_interpret


def _configs(n_tiles_max: int):
    """Block shapes tried on the GPU: (BLOCK_L, num_warps) for a tile of BLOCK_H*BLOCK_D lanes."""
    return [triton.Config({"BLOCK_L": bl}, num_warps=w)
            for bl, w in ((8, 4), (16, 4), (32, 4), (16, 8), (32, 8), (64, 8))
            if bl <= n_tiles_max]


def _tunable(fn):
    """Autotune over _configs on the GPU; in the interpreter run a single small config."""
    if triton_interpret():
        return fn
    return triton.autotune(configs=_configs(64), key=["L", "H", "D_PAD", "DTYPE_KEY"])(fn)


@triton.jit
def _tile_offsets(l0, h0, L, H, D, stride_l, stride_h,
                  BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """int64 offsets (inside one frame) and mask of a [BLOCK_L, BLOCK_H, BLOCK_D] tile."""
    offs_l = l0 + tl.arange(0, BLOCK_L)
    offs_h = h0 + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    off = (offs_l.to(tl.int64)[:, None, None] * stride_l
           + offs_h.to(tl.int64)[None, :, None] * stride_h
           + offs_d[None, None, :])
    mask = (offs_l < L)[:, None, None] & (offs_h < H)[None, :, None] & (offs_d < D)[None, None, :]
    return off, mask


@triton.jit
def _program_tile(L, F, BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr):
    """(first token, first head, row of frame 0 of the clip) of this program.
    Axis 0 enumerates (clip, token block) so it never hits the 65535 limit of axes 1/2."""
    n_lblocks = tl.cdiv(L, BLOCK_L)
    pid = tl.program_id(0)
    clip = (pid // n_lblocks).to(tl.int64) * F
    return (pid % n_lblocks) * BLOCK_L, tl.program_id(1) * BLOCK_H, clip


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


@_tunable
@triton.jit
def _temporal_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,
    sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h, so_n, so_l, so_h,
    L, H, D, F, scale,
    D_PAD, DTYPE_KEY,
    BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    l0, h0, clip = _program_tile(L, F, BLOCK_L, BLOCK_H)
    q_off, mask = _tile_offsets(l0, h0, L, H, D, sq_l, sq_h, BLOCK_L, BLOCK_H, BLOCK_D)
    k_off, _ = _tile_offsets(l0, h0, L, H, D, sk_l, sk_h, BLOCK_L, BLOCK_H, BLOCK_D)
    v_off, _ = _tile_offsets(l0, h0, L, H, D, sv_l, sv_h, BLOCK_L, BLOCK_H, BLOCK_D)
    o_off, _ = _tile_offsets(l0, h0, L, H, D, so_l, so_h, BLOCK_L, BLOCK_H, BLOCK_D)

    k_first = tl.load(k_ptr + clip * sk_n + k_off, mask=mask, other=0.0).to(tl.float32)
    v_first = tl.load(v_ptr + clip * sv_n + v_off, mask=mask, other=0.0).to(tl.float32)
    for f in range(0, F):
        n = clip + f
        p = clip + tl.maximum(f - 1, 0)
        q = tl.load(q_ptr + n * sq_n + q_off, mask=mask, other=0.0).to(tl.float32)
        k_prev = tl.load(k_ptr + p * sk_n + k_off, mask=mask, other=0.0).to(tl.float32)
        v_prev = tl.load(v_ptr + p * sv_n + v_off, mask=mask, other=0.0).to(tl.float32)
        w_prev, w_first = _two_key_probs(q, k_prev, k_first, scale)
        out = w_prev * v_prev + w_first * v_first
        tl.store(o_ptr + n * so_n + o_off, out.to(o_ptr.dtype.element_ty), mask=mask)


@_tunable
@triton.jit
def _temporal_bwd_kernel(
    do_ptr, q_ptr, k_ptr, v_ptr, dq_ptr, dk_ptr, dv_ptr,
    sdo_n, sdo_l, sdo_h, sq_n, sq_l, sq_h, sk_n, sk_l, sk_h, sv_n, sv_l, sv_h,
    sg_n, sg_l, sg_h,   # strides of dq, dk, dv (all contiguous, same shape)
    L, H, D, F, scale,
    D_PAD, DTYPE_KEY,
    BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    l0, h0, clip = _program_tile(L, F, BLOCK_L, BLOCK_H)
    do_off, mask = _tile_offsets(l0, h0, L, H, D, sdo_l, sdo_h, BLOCK_L, BLOCK_H, BLOCK_D)
    q_off, _ = _tile_offsets(l0, h0, L, H, D, sq_l, sq_h, BLOCK_L, BLOCK_H, BLOCK_D)
    k_off, _ = _tile_offsets(l0, h0, L, H, D, sk_l, sk_h, BLOCK_L, BLOCK_H, BLOCK_D)
    v_off, _ = _tile_offsets(l0, h0, L, H, D, sv_l, sv_h, BLOCK_L, BLOCK_H, BLOCK_D)
    g_off, _ = _tile_offsets(l0, h0, L, H, D, sg_l, sg_h, BLOCK_L, BLOCK_H, BLOCK_D)
    out_ty = dq_ptr.dtype.element_ty

    k_first = tl.load(k_ptr + clip * sk_n + k_off, mask=mask, other=0.0).to(tl.float32)
    v_first = tl.load(v_ptr + clip * sv_n + v_off, mask=mask, other=0.0).to(tl.float32)
    dk_first = tl.zeros_like(k_first)
    dv_first = tl.zeros_like(v_first)
    for f in range(0, F):
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

    tl.store(dk_ptr + clip * sg_n + g_off, dk_first.to(out_ty), mask=mask)
    tl.store(dv_ptr + clip * sg_n + g_off, dv_first.to(out_ty), mask=mask)
    # the last frame's keys/values are nobody's prev: zero gradient
    last = clip + F - 1
    zero = tl.zeros_like(dk_first).to(out_ty)
    tl.store(dk_ptr + last * sg_n + g_off, zero, mask=mask & (F >= 2))
    tl.store(dv_ptr + last * sg_n + g_off, zero, mask=mask & (F >= 2))


def _blocks(h: int, d: int):
    """BLOCK_D covers the head dim (padded to a power of two); BLOCK_H heads share a tile so a
    tile spans up to 128 contiguous channels of a token row."""
    block_d = max(16, triton.next_power_of_2(d))
    block_h = max(1, min(triton.next_power_of_2(h), 128 // block_d))
    return block_h, block_d


def _launch(q, num_frames: int):
    """Meta-parameters and grid shared by the forward and backward launches."""
    n, l, h, d = q.shape
    block_h, block_d = _blocks(h, d)
    meta = {"BLOCK_H": block_h, "BLOCK_D": block_d}
    if triton_interpret():
        meta["BLOCK_L"] = 4
    clips = n // num_frames

    def grid(m):
        return (clips * triton.cdiv(l, m["BLOCK_L"]), triton.cdiv(h, block_h))
    return meta, grid, block_d


def _dtype_key(t):
    return {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[t.dtype]


def temporal_attention_fwd(q, k, v, num_frames: int, scale: float):
    """out (B*F, L, H, D) contiguous; see the module docstring."""
    n, l, h, d = q.shape
    out = empty((n, l, h, d), q.dtype, q.device)
    meta, grid, block_d = _launch(q, num_frames)
    _temporal_fwd_kernel[grid](
        q, k, v, out,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        l, h, d, num_frames, scale, block_d, _dtype_key(q), **meta)
    return out


def temporal_attention_bwd(dout, q, k, v, num_frames: int, scale: float):
    """(dq, dk, dv), each (B*F, L, H, D) contiguous in q's dtype."""
    n, l, h, d = q.shape
    dq, dk, dv = (empty((n, l, h, d), q.dtype, q.device) for _ in range(3))
    meta, grid, block_d = _launch(q, num_frames)
    _temporal_bwd_kernel[grid](
        dout, q, k, v, dq, dk, dv,
        dout.stride(0), dout.stride(1), dout.stride(2), q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        dq.stride(0), dq.stride(1), dq.stride(2),
        l, h, d, num_frames, scale, block_d, _dtype_key(q), **meta)
    return dq, dk, dv


register_impl("temporal_attention_fwd", "triton", temporal_attention_fwd)
register_impl("temporal_attention_bwd", "triton", temporal_attention_bwd)
