"""group_norm_silu: the public op ``act(GroupNorm(x))`` for inference speed, its custom op and autograd.

    tfaa::group_norm_silu_fwd(x, weight?, bias?, num_groups, eps, silu, backend) -> a

``x``: ``(N, C, H, W)`` NCHW, channels_last or any strided view; ``weight``/``bias``: ``(C,)`` or
None (any floating dtype); ``a``: x's shape and dtype, in x's memory format (channels_last when x
is channels_last-contiguous, else NCHW). A backend implements the entry point
``"group_norm_silu_fwd"`` with this signature minus ``backend`` (only "triton" does: GroupNorm
statistics in one read of x, then one read + one write for the apply; DESIGN.md §2). Autograd
saves x alone (not the normalized or activated tensor) and calls

    tfaa::group_norm_silu_bwd(da, x, weight?, bias?, num_groups, eps, silu, backend) -> (dx, dweight, dbias)

(dx in x's dtype and memory format, dweight/dbias ``(C,)`` fp32), the entry point
``"group_norm_silu_bwd"`` of the backend ("triton": statistics recomputed, then two reads of x and
da and one write of dx; tfaa_kernels.triton.group_norm_silu_backward), or, for a backend without
one, recomputes through the reference (torch GroupNorm + SiLU autograd).
"""
from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import reference
from .._autocast import autocast_inputs
from .._layout import memory_format_of
from .._validation import check_dtype, check_group_norm_args, check_tensor
from ..backends import auto_targets_cuda_graphs, get_impl, has_entry_point, resolve_backend

ACTIVATIONS = ("silu", None)


def check_group_norm_inputs(x, num_groups, weight, bias, eps, activation) -> None:
    """Argument rules of :func:`group_norm_silu`; raises TypeError/ValueError naming the argument."""
    check_tensor("x", x, 4, "(N, C, H, W)")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    check_group_norm_args(x, num_groups, weight, bias, eps)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")


@torch.library.custom_op("tfaa::group_norm_silu_fwd", mutates_args=())
def group_norm_silu_fwd(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], num_groups: int,
                        eps: float, silu: bool, backend: str) -> Tensor:
    return get_impl("group_norm_silu_fwd", backend)(x, weight, bias, num_groups, eps, silu)


@group_norm_silu_fwd.register_fake
def _(x, weight, bias, num_groups, eps, silu, backend):
    return torch.empty_like(x, memory_format=memory_format_of(x))


def _no_autocast(x: Tensor):
    """The reference runs in x's dtype, like the kernel (autocast would run GroupNorm in fp32)."""
    dev = x.device.type
    if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev):
        return torch.autocast(dev, enabled=False)
    return contextlib.nullcontext()


@torch.library.custom_op("tfaa::group_norm_silu_bwd", mutates_args=())
def group_norm_silu_bwd(da: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], num_groups: int,
                        eps: float, silu: bool, backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    dx, dw, db = get_impl("group_norm_silu_bwd", backend)(da, x, weight, bias, num_groups, eps, silu)
    return dx, dw.float(), db.float()


@group_norm_silu_bwd.register_fake
def _(da, x, weight, bias, num_groups, eps, silu, backend):
    c = x.shape[1]
    return (torch.empty_like(x, memory_format=memory_format_of(x)), x.new_empty((c,), dtype=torch.float32),
            x.new_empty((c,), dtype=torch.float32))


def _setup(ctx, inputs, output):
    x, weight, bias, num_groups, eps, silu, backend = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.args = (num_groups, eps, silu, backend)


def _backward(ctx, da):
    """The backend's backward kernel where it has one, else the reference's autograd on a recomputed
    a = act(GroupNorm(x))."""
    x, weight, bias = ctx.saved_tensors
    num_groups, eps, silu, backend = ctx.args
    need = ctx.needs_input_grad[:3]
    if has_entry_point("group_norm_silu_bwd", backend):
        dx, dw, db = group_norm_silu_bwd(da, x, weight, bias, num_groups, eps, silu, backend)
        dw = dw.to(weight.dtype) if need[1] and weight is not None else None
        db = db.to(bias.dtype) if need[2] and bias is not None else None
        return (dx if need[0] else None), dw, db, None, None, None, None
    with torch.enable_grad(), _no_autocast(x):
        leaves = [t.detach().requires_grad_(bool(nd)) if t is not None else None
                  for t, nd in zip((x, weight, bias), need)]
        wrt = [t for t, nd in zip(leaves, need) if nd and t is not None]
        if not wrt:
            return None, None, None, None, None, None, None
        a = reference.group_norm_silu(leaves[0], num_groups, leaves[1], leaves[2], eps, "silu" if silu else None)
        grads = iter(torch.autograd.grad(a, wrt, da))
    dx, dw, db = (next(grads) if nd and t is not None else None for t, nd in zip(leaves, need))
    return dx, dw, db, None, None, None, None


group_norm_silu_fwd.register_autograd(_backward, setup_context=_setup)


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def resolve_group_norm_backend(backend: str, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> str:
    """The backend group_norm_silu runs: an explicit one as given (if it can run here); "auto" takes
    the Triton kernels only for CUDA tensors with Triton available, outside torch.compile (there the
    reference lets inductor fuse GroupNorm+SiLU with its neighbours), and with gradients only inside
    :func:`tfaa_kernels.auto_for_cuda_graphs` (forward+backward GPU time at S1 (32, 320, 64x64),
    bf16, H100, S11-run 3: 0.306 ms vs torch's 0.619 NCHW, 0.379 vs 1.475 channels_last; but an
    eager call costs ~1.5 ms of host time against torch's ~0.6); else the reference ("torch")."""
    be = resolve_backend(backend, "group_norm_silu", x.device)
    eager_grad = _needs_grad(x, weight, bias) and not auto_targets_cuda_graphs()
    if backend == "auto" and be != "torch" and (eager_grad or torch.compiler.is_compiling()):
        return "torch"
    return be


def group_norm_silu(x: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                    eps: float = 1e-5, activation: Optional[str] = "silu", backend: str = "auto") -> Tensor:
    """``activation(GroupNorm(x))``: ``F.silu(F.group_norm(x, num_groups, weight, bias, eps))``,
    fast for inference: on CUDA without gradients the Triton kernels read x once for the statistics
    (fp32, shifted sums: accurate for inputs with a large mean) and once more for the apply, which
    writes ``a`` once (3 passes over x instead of torch's 5). Its backward has Triton kernels too
    (``backend="triton"``; "auto" with gradients inside :func:`tfaa_kernels.auto_for_cuda_graphs`).

    Args:
        x: ``(N, C, H, W)`` (each of the N images, e.g. frames, normalized on its own), NCHW,
            channels_last or any strided view; fp32, fp16 or bf16 (fp64 too with ``backend="torch"``).
        num_groups: G, dividing C: each ``(C/G, H, W)`` slab of an image is normalized.
        weight, bias: ``(C,)`` affine parameters or None; any floating dtype (fp32 parameters with a
            half-precision x are fine: the kernel reads them in fp32, the reference casts them to
            x's dtype); gradients come back in their own dtype.
        eps: added to the variance, > 0.
        activation: ``"silu"`` or None (GroupNorm only).
        backend: ``"auto"`` (the Triton kernels for CUDA tensors when no gradient is needed, or
            inside :func:`tfaa_kernels.auto_for_cuda_graphs`, and not under torch.compile; else the
            reference), ``"torch"`` (the reference) or ``"triton"`` (always the kernels: CUDA
            tensors, or CPU under ``TRITON_INTERPRET=1``; differentiable: the backward kernels
            recompute the statistics and read x and da twice, saving only x for the backward).

    Returns:
        ``(N, C, H, W)`` in x's dtype — under ``torch.autocast`` the autocast dtype, the inputs being
        cast like the other ops do — channels_last when x is channels_last-contiguous, else NCHW.
        Differentiable in x, weight and bias.
    """
    x, weight, bias = autocast_inputs(x, weight, bias)
    check_group_norm_inputs(x, num_groups, weight, bias, eps, activation)
    be = resolve_group_norm_backend(backend, x, weight, bias)
    check_dtype("x", x, be)
    if be == "torch" or x.numel() == 0:
        with _no_autocast(x):
            a = reference.group_norm_silu(x, num_groups, weight, bias, eps, activation)
        return a.contiguous(memory_format=memory_format_of(x))
    if backend == "auto" and type(x) is torch.Tensor and not _needs_grad(x, weight, bias):
        # "auto" chose the kernel, eager, no gradient: the custom op's dispatch (there for
        # torch.compile and autograd) is skipped, the kernel called directly, a lower host cost.
        # With gradients (inside auto_for_cuda_graphs) the custom op is needed: it is what records
        # the backward (without it the gradient stopped here, found by S12-run 12's UNet test)
        return get_impl("group_norm_silu_fwd", be)(x, weight, bias, num_groups, float(eps), activation == "silu")
    return group_norm_silu_fwd(x, weight, bias, num_groups, float(eps), activation == "silu", be)
