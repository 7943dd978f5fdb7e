"""temporal_conv1d: the public op, its torch.library custom ops and their autograd.

    tfaa::temporal_conv1d_fwd(x, weight, bias?, num_frames, backend) -> y
    tfaa::temporal_conv1d_bwd(dy, x, weight, num_frames, need_bias_grad, backend) -> (dx, dweight, dbias)

and the fused GroupNorm -> SiLU -> conv layer (``norm=``/``activation=`` of the public op):

    tfaa::temporal_conv1d_gn_silu_fwd(x, weight, bias?, gn_weight?, gn_bias?, num_frames, num_groups,
                                      eps, silu, backend) -> y
    tfaa::temporal_conv1d_gn_silu_bwd(dy, x, weight, gn_weight?, gn_bias?, num_frames, num_groups, eps,
                                      silu, need_bias_grad, backend) -> (dx, dweight, dbias, dgn_weight, dgn_bias)

``num_groups == 0`` there means "no GroupNorm"; ``dgn_weight``/``dgn_bias`` are ``(C_in,)`` fp32.

``x, dy``: ``(B*F, C, H, W)`` NCHW or channels_last; ``weight``: ``(C_out, C_in, K)``; ``y, dx`` in
x's memory format; ``dbias`` is ``(C_out,)`` (zeros when no bias grad is needed). A backend
implements the entry points ``"temporal_conv1d_fwd"`` / ``"temporal_conv1d_bwd"`` with these
signatures minus ``backend``.
"""
from __future__ import annotations

import os

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .. import reference
from .._autocast import autocast_inputs
from .._layout import memory_format_of
from .._validation import check_dtype, check_group_norm_args, check_num_frames, check_same, check_tensor
from ..backends import (AUTO_PREFERENCE, auto_backend, auto_targets_cuda_graphs, backend_runs_on, get_impl, has_impl,
                        resolve_backend)
from .group_norm import group_norm_silu


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
    return torch.empty((n, weight.shape[0], h, w), dtype=x.dtype, device=x.device,
                       memory_format=memory_format_of(x))


@torch.library.custom_op("tfaa::temporal_conv1d_bwd", mutates_args=())
def temporal_conv1d_bwd(dy: Tensor, x: Tensor, weight: Tensor, num_frames: int, need_bias_grad: bool,
                        backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    return get_impl("temporal_conv1d_bwd", backend)(dy, x, weight, num_frames, need_bias_grad)


@temporal_conv1d_bwd.register_fake
def _(dy, x, weight, num_frames, need_bias_grad, backend):
    return (torch.empty_like(x, memory_format=memory_format_of(x)), weight.new_empty(weight.shape),
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


class GroupNormSpec(NamedTuple):
    """A per-frame GroupNorm applied to the conv's input (nn.GroupNorm over each ``(C, H, W)``
    image): ``num_groups`` divides C_in; ``weight``/``bias`` are ``(C_in,)`` or None; ``eps > 0``."""
    num_groups: int
    weight: Optional[Tensor] = None
    bias: Optional[Tensor] = None
    eps: float = 1e-5

    @classmethod
    def from_module(cls, module: torch.nn.GroupNorm) -> "GroupNormSpec":
        """The spec of an ``nn.GroupNorm`` (its parameters are used, so gradients reach them)."""
        if not isinstance(module, torch.nn.GroupNorm):
            raise TypeError(f"module must be a torch.nn.GroupNorm, got {type(module).__name__}")
        return cls(module.num_groups, module.weight, module.bias, module.eps)


def check_norm(norm, activation, x: Tensor) -> None:
    """Rules of the fused prologue's ``norm`` and ``activation`` arguments."""
    if activation is not None and activation != "silu":
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    if norm is None:
        return
    if not isinstance(norm, GroupNormSpec):
        raise TypeError(f"norm must be a GroupNormSpec or None, got {type(norm).__name__}")
    check_group_norm_args(x, norm.num_groups, norm.weight, norm.bias, norm.eps, prefix="norm.", channels="C_in")


@torch.library.custom_op("tfaa::temporal_conv1d_gn_silu_fwd", mutates_args=())
def temporal_conv1d_gn_silu_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], gn_weight: Optional[Tensor],
                                gn_bias: Optional[Tensor], num_frames: int, num_groups: int, eps: float,
                                silu: bool, backend: str) -> Tensor:
    return get_impl("temporal_conv1d_gn_silu_fwd", backend)(
        x, weight, bias, gn_weight, gn_bias, num_frames, num_groups, eps, silu)


@temporal_conv1d_gn_silu_fwd.register_fake
def _(x, weight, bias, gn_weight, gn_bias, num_frames, num_groups, eps, silu, backend):
    n, _, h, w = x.shape
    return torch.empty((n, weight.shape[0], h, w), dtype=x.dtype, device=x.device,
                       memory_format=memory_format_of(x))


@torch.library.custom_op("tfaa::temporal_conv1d_gn_silu_bwd", mutates_args=())
def temporal_conv1d_gn_silu_bwd(dy: Tensor, x: Tensor, weight: Tensor, gn_weight: Optional[Tensor],
                                gn_bias: Optional[Tensor], num_frames: int, num_groups: int, eps: float,
                                silu: bool, need_bias_grad: bool, backend: str
                                ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    dx, dw, db, dgw, dgb = get_impl("temporal_conv1d_gn_silu_bwd", backend)(
        dy, x, weight, gn_weight, gn_bias, num_frames, num_groups, eps, silu, need_bias_grad)
    return dx, dw, db, dgw.float(), dgb.float()


@temporal_conv1d_gn_silu_bwd.register_fake
def _(dy, x, weight, gn_weight, gn_bias, num_frames, num_groups, eps, silu, need_bias_grad, backend):
    c_in = x.shape[1]
    return (torch.empty_like(x, memory_format=memory_format_of(x)), weight.new_empty(weight.shape),
            weight.new_empty((weight.shape[0],)), x.new_empty((c_in,), dtype=torch.float32),
            x.new_empty((c_in,), dtype=torch.float32))


def _setup_fused(ctx, inputs, output):
    x, weight, bias, gn_weight, gn_bias, num_frames, num_groups, eps, silu, backend = inputs
    ctx.save_for_backward(x, weight, gn_weight, gn_bias)
    ctx.has_bias = bias is not None
    ctx.args = (num_frames, num_groups, eps, silu, backend)


def _backward_fused(ctx, dy):
    x, weight, gn_weight, gn_bias = ctx.saved_tensors
    num_frames, num_groups, eps, silu, backend = ctx.args
    dx, dw, db, dgw, dgb = temporal_conv1d_gn_silu_bwd(dy, x, weight, gn_weight, gn_bias, num_frames,
                                                       num_groups, eps, silu, ctx.has_bias, backend)
    dgw = dgw.to(gn_weight.dtype) if gn_weight is not None else None
    dgb = dgb.to(gn_bias.dtype) if gn_bias is not None else None
    return dx, dw, (db if ctx.has_bias else None), dgw, dgb, None, None, None, None, None


temporal_conv1d_gn_silu_fwd.register_autograd(_backward_fused, setup_context=_setup_fused)


# Forward+backward of the kernel backends measured slower than the reference (cuDNN Conv1d on the
# rearranged tensor) on frames smaller than 32x32 (bench_conv S2 16x16: reference 1.26 ms vs
# cuda 1.54 / triton 2.04; S1 64x64: cuda 1.35 vs reference 3.52; RESULTS.md), so "auto" keeps the
# reference there when gradients are needed. Those are eager times, mostly the host's: in GPU time
# (inside tfaa_kernels.auto_for_cuda_graphs) Triton is the fastest there (S14-run 4, S2 NCHW
# fwd+bwd: triton 0.464, cuda 0.742, reference 1.239 ms; channels_last 0.454 / 0.482 / 1.24), so a
# captured step takes Triton first. Forward-only (sampling) always takes the kernel.
_AUTO_MIN_PIXELS_WITH_GRAD = 1024


# On channels_last frames >= 32x32 the CUDA backend's cuBLAS path (one GEMM per tap, K passes over
# y) measured slower than the Triton implicit GEMM (S6-run 1, H100, bf16, no grad, GN+SiLU+conv
# layer, GPU time: 64x64 C320 cuda 0.463 / triton 0.301 ms, 32x32 C640 0.286 / 0.227), so "auto"
# takes Triton there, unless the CUDA backend runs the call as its Hopper implicit-GEMM kernel
# (csrc/conv_wgmma.cu: bf16/fp16, channel counts multiples of 8, sm_90a), which measured faster
# than Triton (S15-run 5, bench_conv, GPU time: S1 fwd 0.156 vs 0.198 ms, fwd+bwd 0.597 vs 0.667).
# Fast sampling runs the UNet in channels_last, so this is its path.
_AUTO_TRITON_MIN_PIXELS_CHANNELS_LAST = 1024
_WGMMA_DEVICES: dict = {}


def _cuda_conv_uses_wgmma(x: Tensor, weight: Tensor) -> bool:
    """Whether backend="cuda" runs this channels_last forward as the Hopper TMA + wgmma kernel
    (bf16/fp16, C_in and C_out multiples of 8, a device that runs the extension's sm_90a code, and
    TFAA_CUDA_CONV_WGMMA not "0"). The device answer comes from the extension once per device."""
    if (x.device.type != "cuda" or x.dtype not in (torch.bfloat16, torch.float16) or x.shape[1] % 8
            or weight.shape[0] % 8 or os.environ.get("TFAA_CUDA_CONV_WGMMA") == "0"):
        return False
    if auto_backend("temporal_conv1d", ("cuda",), x.device) != "cuda":  # no prebuilt extension here
        return False
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    if index not in _WGMMA_DEVICES:
        from .. import cuda as tfaa_cuda
        try:
            probe = torch.zeros(2, 8, 2, 4, device=x.device, dtype=torch.bfloat16)
            ok = tfaa_cuda.build().conv_paths(probe.contiguous(memory_format=torch.channels_last),
                                              torch.zeros(8, 8, 3, device=x.device, dtype=torch.bfloat16),
                                              2)["forward"] == "wgmma"
        except Exception:  # no extension: nothing to prefer
            ok = False
        if torch.cuda.is_current_stream_capturing():  # the extension does not probe while capturing
            return ok
        _WGMMA_DEVICES[index] = ok
    return _WGMMA_DEVICES[index]


def _auto_for_shape(x: Tensor, weight: Tensor) -> str:
    """The backend of ``backend="auto"`` for this call's shape: for small frames with gradients the
    reference (eager) or Triton first (inside :func:`tfaa_kernels.auto_for_cuda_graphs`), Triton
    before CUDA for large channels_last frames that CUDA would run on cuBLAS, else
    AUTO_PREFERENCE's order."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    hw = x.shape[2] * x.shape[3]
    preference = AUTO_PREFERENCE["temporal_conv1d"]
    triton_first = ("triton",) + tuple(b for b in preference if b != "triton")
    if needs_grad and hw < _AUTO_MIN_PIXELS_WITH_GRAD:
        if not auto_targets_cuda_graphs():
            return "torch"
        preference = triton_first
    if (hw >= _AUTO_TRITON_MIN_PIXELS_CHANNELS_LAST and memory_format_of(x) == torch.channels_last
            and not _cuda_conv_uses_wgmma(x, weight)):
        preference = triton_first
    return auto_backend("temporal_conv1d", preference, x.device)


def _fused_backend(backend: str, device: torch.device, training: bool = False) -> str:
    """How the GroupNorm/SiLU layer runs: "triton" (the fused kernel), "torch" (the reference), or
    "composite" — :func:`group_norm_silu` (with "auto": the Triton statistics + apply kernels when
    no gradient is needed, torch's GroupNorm + SiLU with autograd otherwise), then the conv kernel
    of ``backend`` ("auto"/"cuda"). "auto" takes the composite because, with torch's GroupNorm +
    SiLU in front, it measured faster than the fused kernel in benchmarks/bench_conv.py (forward
    and, by 3x, forward+backward at S1; RESULTS.md); with the Triton GroupNorm + SiLU the composite's
    forward measured 0.272 ms at S1 (CUDA conv) against 0.292 ms for the fused kernel (RESULTS.md,
    S3-run 6).

    Exception: "auto" with gradients (``training``) inside :func:`tfaa_kernels.auto_for_cuda_graphs`
    takes the fused kernel. A captured step pays the host's Python and launch time once, so GPU time
    decides, and there the fused layer's forward+backward (S11-run 1, H100, bf16, 32 frames, the temporal
    conv block's layer under autocast, GPU time of graph replays) measured 0.366 / 0.323 / 0.424 /
    0.426 ms at 32x32 C320 / 16x16 C640 / 8x8 C1280 / 4x4 C1280 against 0.446 / 0.730 / 0.698 /
    0.422 for the composite, keeping 0.6-9 MiB for the backward instead of 12-41 MiB (it saves x
    alone). Eager, the same calls cost more host time (3.05 vs 2.05 ms at 32x32: ~12 Triton
    launches), so eager training keeps the composite."""
    be = resolve_backend(backend, "temporal_conv1d", device)
    if be == "torch":
        return "torch"
    if backend == "triton" and has_impl("temporal_conv1d_gn_silu", be):
        return "triton"
    if (backend == "auto" and training and device.type == "cuda" and auto_targets_cuda_graphs()
            and has_impl("temporal_conv1d_gn_silu", "triton") and backend_runs_on("triton", device)):
        return "triton"
    return "composite"


def temporal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor], num_frames: int,
                    backend: str = "auto", *, norm: Optional[GroupNormSpec] = None,
                    activation: Optional[str] = None) -> Tensor:
    """Temporal 1D convolution over the frame axis on the 2D UNet's layout (DESIGN.md §1b),
    optionally fused with the per-frame GroupNorm and SiLU in front of it (DESIGN.md §2).

    ``y[b, f, :, p] = bias + sum_t weight[:, :, t] @ a[b, f + t - K//2, :, p]``, frames outside the
    clip counting as zero, where ``a = x`` by default and ``a = activation(norm(x))`` with the fused
    prologue: ``norm=GroupNormSpec(num_groups, gn_weight, gn_bias, eps)`` is nn.GroupNorm applied to
    each frame's ``(C_in, H, W)`` image, ``activation="silu"`` is SiLU. The fused kernels read x twice
    (statistics, then the GEMM) and write y once; a is never materialized (the backward recomputes
    it). One layer of the temporal conv block is therefore::

        y = temporal_conv1d(h, conv.weight, conv.bias, F,
                            norm=GroupNormSpec.from_module(group_norm), activation="silu")

    Args:
        x: ``(B*F, C_in, H, W)``, NCHW or channels_last (any strides), row ``n = b*F + f``.
        weight: ``(C_out, C_in, K)`` (nn.Conv1d layout), K odd; same dtype/device as x.
        bias: ``(C_out,)`` or None.
        num_frames: F.
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or ``"cuda"``.
        norm: a :class:`GroupNormSpec` or None (keyword only). Its weight/bias may be fp32 with a
            half-precision x; their gradients come back in their own dtype.
        activation: ``"silu"`` or None (keyword only).

    Returns:
        ``(B*F, C_out, H, W)`` in x's memory format. Differentiable in x, weight, bias and the
        GroupNorm's weight and bias.
    """
    x, weight, bias = autocast_inputs(x, weight, bias)
    check_conv_inputs(x, weight, bias, num_frames)
    check_norm(norm, activation, x)
    if norm is None and activation is None:
        if backend == "auto":
            be = _auto_for_shape(x, weight)
        else:
            be = resolve_backend(backend, "temporal_conv1d", x.device)
        check_dtype("x", x, be)
        if be == "torch" or x.numel() == 0 or weight.numel() == 0:
            return reference.temporal_conv1d(x, weight, bias, num_frames)
        return temporal_conv1d_fwd(x, weight, bias, num_frames, be)

    num_groups = norm.num_groups if norm is not None else None
    gn_w = norm.weight if norm is not None else None
    gn_b = norm.bias if norm is not None else None
    training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, gn_w, gn_b))
    be = _fused_backend(backend, x.device, training and x.dtype != torch.float64)
    eps = float(norm.eps) if norm is not None else 1e-5
    if be == "composite":
        if num_groups is None:  # SiLU alone: one elementwise pass in torch already
            a = reference.group_norm_silu(x, None, None, None, eps, activation)
        else:  # inference: Triton GroupNorm statistics + apply; training: torch's autograd path
            a = group_norm_silu(x, num_groups, gn_w, gn_b, eps, activation,
                                backend="triton" if backend == "triton" else "auto")
        return temporal_conv1d(a, weight, bias, num_frames, backend)
    check_dtype("x", x, be)
    if be == "torch" or x.numel() == 0 or weight.numel() == 0:
        return reference.group_norm_silu_temporal_conv1d(x, weight, bias, num_frames, num_groups, gn_w, gn_b,
                                                         eps, activation)
    return temporal_conv1d_gn_silu_fwd(x, weight, bias, gn_w, gn_b, num_frames, num_groups or 0, eps,
                                       activation == "silu", be)
