"""temporal_conv1d: the public op, its torch.library custom ops and their autograd.

    tfaa::temporal_conv1d_fwd(x, weight, bias?, num_frames, backend) -> y
    tfaa::temporal_conv1d_bwd(dy, x, weight, num_frames, need_bias_grad, backend) -> (dx, dweight, dbias)

``x, dy``: ``(B*F, C, H, W)`` NCHW or channels_last; ``weight``: ``(C_out, C_in, K)``; ``y, dx`` in
x's memory format; ``dbias`` is ``(C_out,)`` (zeros when no bias grad is needed). A backend
implements the entry points ``"temporal_conv1d_fwd"`` / ``"temporal_conv1d_bwd"`` with these
signatures minus ``backend``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import reference
from .._validation import check_dtype, check_num_frames, check_same, check_tensor
from ..backends import get_impl, resolve_backend


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last when x is laid out that way (and not also plain contiguous), else NCHW."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def check_conv_inputs(x, weight, bias, num_frames) -> None:
    check_tensor("x", x, 4, "(B*F, C_in, H, W)")
    check_tensor("weight", weight, 3, "(C_out, C_in, K)")
    tensors, names = [x, weight], ["x", "weight"]
    if bias is not None:
        check_tensor("bias", bias, 1, "(C_out,)")
        tensors.append(bias)
        names.append("bias")
    check_same(names, tensors)
    c_out, c_in, kk = weight.shape
    if x.shape[1] != c_in:
        raise ValueError(f"weight must be (C_out, C_in, K) with C_in = x.shape[1] = {x.shape[1]}, "
                         f"got weight shape {tuple(weight.shape)}")
    if kk % 2 != 1:
        raise ValueError(f"weight's kernel size K = weight.shape[2] must be odd (1, 3, 5, ...), got {kk}")
    if bias is not None and bias.shape[0] != c_out:
        raise ValueError(f"bias must have C_out = {c_out} elements, got {bias.shape[0]}")
    check_num_frames(num_frames, x.shape[0])


@torch.library.custom_op("tfaa::temporal_conv1d_fwd", mutates_args=())
def temporal_conv1d_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], num_frames: int,
                        backend: str) -> Tensor:
    return get_impl("temporal_conv1d_fwd", backend)(x, weight, bias, num_frames)


@temporal_conv1d_fwd.register_fake
def _(x, weight, bias, num_frames, backend):
    n, _, h, w = x.shape
    return x.new_empty((n, weight.shape[0], h, w), memory_format=memory_format_of(x))


@torch.library.custom_op("tfaa::temporal_conv1d_bwd", mutates_args=())
def temporal_conv1d_bwd(dy: Tensor, x: Tensor, weight: Tensor, num_frames: int, need_bias_grad: bool,
                        backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    return get_impl("temporal_conv1d_bwd", backend)(dy, x, weight, num_frames, need_bias_grad)


@temporal_conv1d_bwd.register_fake
def _(dy, x, weight, num_frames, need_bias_grad, backend):
    return (x.new_empty(x.shape, memory_format=memory_format_of(x)), weight.new_empty(weight.shape),
            weight.new_empty((weight.shape[0],)))


def _setup(ctx, inputs, output):
    x, weight, bias, num_frames, backend = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None
    ctx.args = (num_frames, backend)


def _backward(ctx, dy):
    x, weight = ctx.saved_tensors
    num_frames, backend = ctx.args
    dx, dw, db = temporal_conv1d_bwd(dy, x, weight, num_frames, ctx.has_bias, backend)
    return dx, dw, (db if ctx.has_bias else None), None, None


temporal_conv1d_fwd.register_autograd(_backward, setup_context=_setup)


def temporal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor], num_frames: int,
                    backend: str = "auto") -> Tensor:
    """Temporal 1D convolution over the frame axis on the 2D UNet's layout (DESIGN.md §1b).

    ``y[b, f, :, p] = bias + sum_t weight[:, :, t] @ x[b, f + t - K//2, :, p]``, frames outside the
    clip counting as zero.

    Args:
        x: ``(B*F, C_in, H, W)``, NCHW or channels_last, row ``n = b*F + f``.
        weight: ``(C_out, C_in, K)`` (nn.Conv1d layout), K odd.
        bias: ``(C_out,)`` or None.
        num_frames: F.
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or ``"cuda"``.

    Returns:
        ``(B*F, C_out, H, W)`` in x's memory format. Differentiable in x, weight and bias.
    """
    check_conv_inputs(x, weight, bias, num_frames)
    be = resolve_backend(backend, "temporal_conv1d", x.device)
    check_dtype("x", x, be)
    if be == "torch" or x.numel() == 0 or weight.numel() == 0:
        return reference.temporal_conv1d(x, weight, bias, num_frames)
    return temporal_conv1d_fwd(x, weight, bias, num_frames, be)
