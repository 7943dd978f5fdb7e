"""The "cuda" backend's entry points: allocate outputs, call ``torch.ops.tfaa_cuda.*``.

Outputs come from :func:`tfaa_kernels._alloc.empty` (poisoned in tests); the C++ ops write them in
place. Signatures are those of :mod:`tfaa_kernels.backends`:

- ``temporal_attention_fwd(q, k, v, num_frames, scale) -> out``
- ``temporal_attention_bwd(dout, q, k, v, num_frames, scale) -> (dq, dk, dv)``
- ``temporal_conv1d_fwd(x, weight, bias_or_None, num_frames) -> y``
- ``temporal_conv1d_bwd(dy, x, weight, num_frames, need_bias_grad) -> (dx, dweight, dbias)``

q/k/v/dout: ``(B*F, L, H, D)``, stride(-1) == 1; out/dq/dk/dv contiguous. x/y/dy/dx:
``(B*F, C, H, W)`` NCHW or channels_last (x's format; dy is brought to it), weight
``(C_out, C_in, K)``, dbias ``(C_out,)`` (zeros when not needed).
"""
from __future__ import annotations

import torch

from .._alloc import empty
from .._layout import memory_format_of
from ..backends import register_impl
from . import build


def _ops():
    build()
    return torch.ops.tfaa_cuda


def temporal_attention_fwd(q, k, v, num_frames: int, scale: float):
    out = empty(q.shape, q.dtype, q.device)
    _ops().temporal_attention_fwd(q, k, v, int(num_frames), float(scale), out)
    return out


def temporal_attention_bwd(dout, q, k, v, num_frames: int, scale: float):
    dq, dk, dv = (empty(q.shape, q.dtype, q.device) for _ in range(3))
    if dout.shape[-1] > 1 and dout.stride(-1) != 1:
        dout = dout.contiguous()
    _ops().temporal_attention_bwd(dout, q, k, v, int(num_frames), float(scale), dq, dk, dv)
    return dq, dk, dv


def temporal_conv1d_fwd(x, weight, bias, num_frames: int):
    fmt = memory_format_of(x)
    x = x.contiguous(memory_format=fmt)
    n, _, h, w = x.shape
    y = empty((n, weight.shape[0], h, w), x.dtype, x.device, memory_format=fmt)
    _ops().temporal_conv1d_fwd(x, weight, bias, int(num_frames), y)
    return y


def temporal_conv1d_bwd(dy, x, weight, num_frames: int, need_bias_grad: bool):
    fmt = memory_format_of(x)
    x = x.contiguous(memory_format=fmt)
    dy = dy.contiguous(memory_format=fmt)
    dx = empty(x.shape, x.dtype, x.device, memory_format=fmt)
    dweight = empty(weight.shape, weight.dtype, weight.device)
    c_out = weight.shape[0]
    dbias = empty((c_out,), weight.dtype, weight.device) if need_bias_grad else None
    _ops().temporal_conv1d_bwd(dy, x, weight, int(num_frames), dx, dweight, dbias)
    if dbias is None:
        dbias = torch.zeros((c_out,), dtype=weight.dtype, device=weight.device)
    return dx, dweight, dbias


register_impl("temporal_attention_fwd", "cuda", temporal_attention_fwd)
register_impl("temporal_attention_bwd", "cuda", temporal_attention_bwd)
register_impl("temporal_conv1d_fwd", "cuda", temporal_conv1d_fwd)
register_impl("temporal_conv1d_bwd", "cuda", temporal_conv1d_bwd)
