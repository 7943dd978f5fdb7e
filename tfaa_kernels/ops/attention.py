"""first_adjacent_attention: the public op, its torch.library custom ops and their autograd.

Kernel backends ("triton", "cuda") run behind four custom ops, so torch.compile(fullgraph=True)
sees opaque nodes with fake (meta) implementations instead of graph-breaking on kernel launches:

    tfaa::temporal_attention_fwd(q, k, v, num_frames, scale, backend) -> out
    tfaa::temporal_attention_bwd(dout, q, k, v, num_frames, scale, backend) -> (dq, dk, dv)
    tfaa::spatial_attention_fwd(q, k, v, num_frames, scale, backend) -> (out, lse)
    tfaa::spatial_attention_bwd(dout, q, k, v, out, lse, num_frames, scale, backend) -> (dq, dk, dv)

``q, k, v, dout``: ``(B*F, L, H, D)`` with ``stride(-1) == 1`` (any other strides);
``out, dq, dk, dv``: ``(B*F, L, H, D)`` contiguous; ``lse``: ``(B*F, H, L)`` fp32, the
natural-log log-sum-exp of each query's scaled scores. A backend implements the entry points
``"<mode>_attention_fwd"`` / ``"<mode>_attention_bwd"`` with the signatures above minus
``backend`` and registers them with :func:`tfaa_kernels.backends.register_impl`.

The temporal backward recomputes the two-key softmax from q, k, v (nothing but the inputs is
saved); the spatial backward uses the saved LSE, FlashAttention-style.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import reference
from .._autocast import autocast_inputs
from .._validation import check_attention_inputs, check_dtype
from ..backends import get_impl, resolve_backend


def _grad_ready(t: Tensor) -> Tensor:
    """Incoming gradients may be expanded or transposed; kernels need stride(-1) == 1."""
    return t if t.stride(-1) == 1 else t.contiguous()


# ---------------------------------------------------------------- temporal mode
@torch.library.custom_op("tfaa::temporal_attention_fwd", mutates_args=())
def temporal_attention_fwd(q: Tensor, k: Tensor, v: Tensor, num_frames: int, scale: float,
                           backend: str) -> Tensor:
    return get_impl("temporal_attention_fwd", backend)(q, k, v, num_frames, scale)


@temporal_attention_fwd.register_fake
def _(q, k, v, num_frames, scale, backend):
    return q.new_empty(q.shape)


@torch.library.custom_op("tfaa::temporal_attention_bwd", mutates_args=())
def temporal_attention_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, num_frames: int,
                           scale: float, backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    return get_impl("temporal_attention_bwd", backend)(dout, q, k, v, num_frames, scale)


@temporal_attention_bwd.register_fake
def _(dout, q, k, v, num_frames, scale, backend):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _temporal_setup(ctx, inputs, output):
    q, k, v, num_frames, scale, backend = inputs
    ctx.save_for_backward(q, k, v)
    ctx.args = (num_frames, scale, backend)


def _temporal_backward(ctx, dout):
    q, k, v = ctx.saved_tensors
    dq, dk, dv = temporal_attention_bwd(_grad_ready(dout), q, k, v, *ctx.args)
    return dq, dk, dv, None, None, None


temporal_attention_fwd.register_autograd(_temporal_backward, setup_context=_temporal_setup)


# ---------------------------------------------------------------- spatial mode
@torch.library.custom_op("tfaa::spatial_attention_fwd", mutates_args=())
def spatial_attention_fwd(q: Tensor, k: Tensor, v: Tensor, num_frames: int, scale: float,
                          backend: str) -> Tuple[Tensor, Tensor]:
    return get_impl("spatial_attention_fwd", backend)(q, k, v, num_frames, scale)


@spatial_attention_fwd.register_fake
def _(q, k, v, num_frames, scale, backend):
    n, l, h, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((n, h, l), dtype=torch.float32)


@torch.library.custom_op("tfaa::spatial_attention_bwd", mutates_args=())
def spatial_attention_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                          num_frames: int, scale: float, backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    return get_impl("spatial_attention_bwd", backend)(dout, q, k, v, out, lse, num_frames, scale)


@spatial_attention_bwd.register_fake
def _(dout, q, k, v, out, lse, num_frames, scale, backend):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _spatial_setup(ctx, inputs, output):
    q, k, v, num_frames, scale, backend = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.args = (num_frames, scale, backend)
    ctx.set_materialize_grads(True)


def _spatial_backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = spatial_attention_bwd(_grad_ready(dout), q, k, v, out, lse, *ctx.args)
    return dq, dk, dv, None, None, None


spatial_attention_fwd.register_autograd(_spatial_backward, setup_context=_spatial_setup)


# ---------------------------------------------------------------- public op
# Spatial mode, "auto": the Triton kernels beat the reference (cat K/V + SDPA) in the forward at
# every measured head dim (S1, D = 40: 4.89 vs 5.91 ms; 32x32 C640, D = 80: 0.46 vs 1.08 ms) and
# in forward+backward at D = 80 (1.96 vs 3.07 ms), but not in forward+backward at D = 40 (S1: 19.9
# vs 19.0 ms; S10-run 6, RESULTS.md). So "auto" takes the reference below head dim 64 only when a
# backward will follow (grad mode on and an input requires grad).
_AUTO_SPATIAL_TRAIN_MIN_D = 64


def _spatial_auto_prefers_reference(q: Tensor, k: Tensor, v: Tensor) -> bool:
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return needs_grad and q.shape[-1] < _AUTO_SPATIAL_TRAIN_MIN_D


def first_adjacent_attention(q: Tensor, k: Tensor, v: Tensor, num_frames: int,
                             mode: str = "temporal", scale: Optional[float] = None,
                             backend: str = "auto") -> Tensor:
    """Temporal First-Adjacent Attention on the 2D UNet's token layout (DESIGN.md §1a).

    Args:
        q, k, v: ``(B*F, L, H, D)``, row ``n = b*F + f``; any strides with ``stride(-1) == 1``
            (e.g. views of one packed ``(B*F, L, 3*H*D)`` projection: no copy is made).
        num_frames: F, frames per clip; ``B*F`` must be divisible by it.
        mode: ``"temporal"`` (default) — each token attends to the same token of frames
            ``prev(f) = max(f-1, 0)`` and 0 (2 keys); ``"spatial"`` — each frame's L queries attend
            to the 2L keys of frames prev(f) and 0.
        scale: softmax scale, default ``D ** -0.5``.
        backend: ``"auto"`` (fastest available for the device; the reference on CPU), ``"torch"``,
            ``"triton"`` or ``"cuda"``.

    Returns:
        ``(B*F, L, H, D)`` contiguous, q's dtype. Differentiable in q, k and v.
    """
    q, k, v = autocast_inputs(q, k, v)
    check_attention_inputs(q, k, v, num_frames, mode, scale)
    if q.shape[-1] == 0:
        raise ValueError("q, k, v must have a head dim D >= 1, got D = 0")
    be = resolve_backend(backend, f"{mode}_attention", q.device)
    if backend == "auto" and mode == "spatial" and _spatial_auto_prefers_reference(q, k, v):
        be = "torch"
    check_dtype("q", q, be)
    if be == "triton" and q.shape[-1] > 256:
        raise ValueError(f"backend='triton' supports head dims D <= 256, got D = {q.shape[-1]}")
    if be == "torch" or q.numel() == 0:
        return reference.first_adjacent_attention(q, k, v, num_frames, mode, scale)
    scale = float(q.shape[-1] ** -0.5 if scale is None else scale)
    if mode == "temporal":
        return temporal_attention_fwd(q, k, v, num_frames, scale, be)
    return spatial_attention_fwd(q, k, v, num_frames, scale, be)[0]
