"""Backend registry: which implementations exist, which can run on a device, and which "auto" picks.

Every kernel backend registers its entry points here, ``"<op>_fwd"`` and ``"<op>_bwd"`` for each
op family (``temporal_attention``, ``spatial_attention``, ``temporal_conv1d``, ``group_norm_silu``;
a backend without ``"group_norm_silu_bwd"`` gets the reference's autograd for that backward)::

    register_impl("temporal_attention_fwd", "triton", fn)

and the custom ops in :mod:`tfaa_kernels.ops` look them up by ``(op, backend)``. The "torch"
backend is the reference itself (:mod:`tfaa_kernels.reference`) called through plain autograd, so
it needs no registration.

Backend names: ``"torch"`` (reference, any device), ``"triton"`` (CUDA tensors, or CPU tensors
when ``TRITON_INTERPRET=1`` was set before import), ``"cuda"`` (the compiled extension in
``csrc/``, CUDA tensors only). ``"auto"`` resolves per op and device through :data:`AUTO_PREFERENCE`.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
from typing import Callable, Dict, List, Optional, Tuple

import torch

BACKENDS = ("torch", "triton", "cuda")
_CHOICES = ("auto",) + BACKENDS

# Preference order of "auto" per op on CUDA tensors, fastest first, as measured by
# benchmarks/bench_attention.py and bench_conv.py (see benchmarks/RESULTS.md). The first backend
# that is available and has an implementation for the op wins; "torch" always closes the list.
# "cuda" enters "auto" only when the extension was prebuilt at install time (no JIT build is ever
# started by "auto"; backend="cuda" asks for one explicitly).
AUTO_PREFERENCE: Dict[str, Tuple[str, ...]] = {
    "temporal_attention": ("cuda", "triton", "torch"),
    "spatial_attention": ("triton", "cuda", "torch"),
    "temporal_conv1d": ("cuda", "triton", "torch"),
    # the public op takes it under "auto" only when no gradient is needed (tfaa_kernels.ops.group_norm)
    "group_norm_silu": ("triton", "torch"),
}

_IMPLS: Dict[Tuple[str, str], Callable] = {}


def register_impl(op: str, backend: str, fn: Callable) -> Callable:
    """Register ``fn`` as ``backend``'s implementation of the kernel entry point ``op``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _IMPLS[(op, backend)] = fn
    return fn


def triton_interpret() -> bool:
    """True when Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_LOADED: Dict[str, bool] = {}
_AUTO_OK: Dict[str, bool] = {}


def load_backends() -> None:
    """Import the kernel backends' modules once (each registers its impls). Called when
    tfaa_kernels is imported, so dispatch under torch.compile only reads dicts."""
    for backend, module in (("triton", "tfaa_kernels.triton"), ("cuda", "tfaa_kernels.cuda")):
        if backend in _LOADED:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError:
            _LOADED[backend] = False
        else:
            _LOADED[backend] = bool(getattr(mod, "AVAILABLE", True))
            _AUTO_OK[backend] = _LOADED[backend] and bool(getattr(mod, "AUTO_OK", True))


def get_impl(op: str, backend: str) -> Callable:
    """The registered implementation of ``op`` for ``backend``; raises if none is registered."""
    try:
        return _IMPLS[(op, backend)]
    except KeyError:
        raise NotImplementedError(f"backend {backend!r} has no implementation of {op!r}") from None


def has_impl(op: str, backend: str) -> bool:
    """Whether ``backend`` implements the op family ``op`` (its ``"<op>_fwd"`` entry point)."""
    if backend == "torch":
        return True
    return has_entry_point(f"{op}_fwd", backend)


def has_entry_point(entry: str, backend: str) -> bool:
    """Whether ``backend`` registered the kernel entry point ``entry`` (e.g. ``"group_norm_silu_bwd"``)."""
    return _LOADED.get(backend, False) and (entry, backend) in _IMPLS


def backend_runs_on(backend: str, device: torch.device) -> bool:
    """Whether ``backend`` can run kernels on tensors of ``device``."""
    device = torch.device(device)
    if backend == "torch":
        return True
    if backend == "triton":
        if device.type == "cuda":
            return _LOADED.get("triton", False)
        return device.type == "cpu" and triton_interpret() and _LOADED.get("triton", False)
    if backend == "cuda":
        return device.type == "cuda" and _LOADED.get("cuda", False)
    return False


def available_backends(device: Optional[torch.device | str] = None) -> List[str]:
    """Backends that can run on ``device`` (default: CUDA if present, else CPU), in the order
    torch, triton, cuda ("auto" chooses among them per op: :data:`AUTO_PREFERENCE`).

    >>> available_backends("cpu")
    ['torch']
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return [b for b in BACKENDS if backend_runs_on(b, torch.device(device))]


def auto_backend(op: str, preference: Tuple[str, ...], device: torch.device) -> str:
    """The first backend of ``preference`` that "auto" may use for ``op`` on ``device`` (available,
    implementing the op, and for "cuda" prebuilt); "torch" when none is, and always off CUDA."""
    if device.type != "cuda":
        return "torch"
    for cand in preference:
        if (cand == "torch" or _AUTO_OK.get(cand, False)) and backend_runs_on(cand, device) \
                and has_impl(op, cand):
            return cand
    return "torch"


_POLICY = threading.local()


@contextlib.contextmanager
def auto_for_cuda_graphs(enabled: bool = True):
    """Inside this context "auto" chooses by GPU time alone, for code that is captured in a CUDA
    graph and replayed (a graph pays the host's Python and launch time once). Wrap the eager
    warm-up calls and the capture alike, so both take the same kernels (and Triton autotunes during
    the warm-up, never during the capture)::

        with tfaa_kernels.auto_for_cuda_graphs():
            step()                          # warm-up, side stream
            with torch.cuda.graph(g):
                step()

    Where it changes the choice, all under gradients (training): the temporal conv layer with
    GroupNorm + SiLU takes the fused Triton kernel (tfaa_kernels.ops.conv._fused_backend),
    group_norm_silu its Triton forward and backward kernels (eager, both cost more host time than
    they save on the GPU), and the plain temporal conv on frames below 32x32 Triton instead of the
    reference (tfaa_kernels.ops.conv._auto_for_shape). Thread-local; nests."""
    previous = getattr(_POLICY, "graphs", False)
    _POLICY.graphs = bool(enabled)
    try:
        yield
    finally:
        _POLICY.graphs = previous


def auto_targets_cuda_graphs() -> bool:
    """Whether the caller is inside :func:`auto_for_cuda_graphs` (``enabled=True``)."""
    return getattr(_POLICY, "graphs", False)


def resolve_backend(backend: str, op: str, device: torch.device) -> str:
    """Turn the user's ``backend`` argument into a concrete backend for ``op`` on ``device``.

    Raises ``ValueError`` for unknown names, and for an explicit backend that cannot run on
    ``device`` or does not implement ``op``.
    """
    if not isinstance(backend, str) or backend not in _CHOICES:
        raise ValueError(f"backend must be one of {_CHOICES}, got {backend!r}")
    if backend == "auto":
        return auto_backend(op, AUTO_PREFERENCE[op], device)
    if not backend_runs_on(backend, device):
        if backend == "triton":
            raise ValueError(
                f"backend='triton' needs CUDA tensors (got device {device.type!r}); CPU tensors are "
                "allowed only when TRITON_INTERPRET=1 is set before tfaa_kernels is imported")
        raise ValueError(
            f"backend={backend!r} cannot run on device {device.type!r} here "
            f"(available for this device: {available_backends(device)})")
    if not has_impl(op, backend):
        raise ValueError(f"backend={backend!r} does not implement {op!r}")
    return backend
