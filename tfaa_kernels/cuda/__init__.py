"""CUDA backend: the hand-written kernels of ``csrc/``, registered as backend ``"cuda"``.

Importing this package is cheap: it builds nothing and loads nothing. ``AVAILABLE`` says whether
the backend can run here (PyTorch sees a CUDA GPU, and either the prebuilt extension
``tfaa_kernels._C`` is installed or a CUDA toolkit is present to JIT-build it). The extension is
loaded on the first call of a "cuda" kernel, or explicitly by :func:`build`:

1. the prebuilt ``tfaa_kernels._C`` (``pip install -e .`` with a CUDA PyTorch and nvcc), else
2. a JIT build with ``torch.utils.cpp_extension.load`` (ninja, the same flags as setup.py),
   cached in ``~/.cache/tfaa/cuda/<torch>-<cuda>-<archs>`` or ``$TFAA_CUDA_CACHE``.

The ops then live in ``torch.ops.tfaa_cuda``; :mod:`tfaa_kernels.cuda.ops` wraps them into the
four entry points of :mod:`tfaa_kernels.backends`.
"""
from __future__ import annotations

import importlib
import importlib.util
import threading

import torch

from . import _build

__all__ = ["AVAILABLE", "build", "is_built"]


def _can_build_or_load() -> bool:
    if importlib.util.find_spec(_build.EXT_NAME) is not None:
        return True
    return _build.find_cuda_home() is not None and _build.CSRC.is_dir()


AVAILABLE = bool(torch.version.cuda) and torch.cuda.is_available() and _can_build_or_load()
# backend="auto" uses this backend only when it was prebuilt (installed with the package), so
# "auto" never starts a JIT build; backend="cuda" builds on first use.
AUTO_OK = AVAILABLE and importlib.util.find_spec(_build.EXT_NAME) is not None

_LOCK = threading.Lock()
_MODULE = None
_ERROR: Exception | None = None


def is_built() -> bool:
    """Whether the extension is loaded in this process."""
    return _MODULE is not None


def _jit_build(verbose: bool):
    from torch.utils import cpp_extension

    missing = [s for s in _build.SOURCES if not (_build.REPO_ROOT / s).is_file()]
    if missing:
        raise RuntimeError(f"tfaa CUDA JIT build: sources {missing} not found under "
                           f"{_build.REPO_ROOT} (install the package editable, pip install -e .)")
    cuda_home = cpp_extension.CUDA_HOME
    if cuda_home is None:
        raise RuntimeError("tfaa CUDA JIT build: PyTorch found no CUDA toolkit (set CUDA_HOME or "
                           "put nvcc on PATH)")
    build_dir = _build.jit_build_dir(torch.__version__, torch.version.cuda)
    return cpp_extension.load(
        name=_build.JIT_NAME,
        sources=[str(_build.REPO_ROOT / s) for s in _build.SOURCES],
        extra_cflags=_build.cxx_flags(),
        extra_cuda_cflags=_build.nvcc_flags(),
        extra_ldflags=_build.cublas_link_flags(cuda_home),
        build_directory=str(build_dir),
        verbose=verbose,
        is_python_module=True,
    )


def build(verbose: bool = False):
    """Load the extension now (prebuilt, else JIT build) and return its Python module.

    Raises ``RuntimeError`` with the cause when neither works; the failure is remembered, so later
    calls fail fast with the same message.
    """
    global _MODULE, _ERROR
    if _MODULE is not None:
        return _MODULE
    with _LOCK:
        if _MODULE is not None:
            return _MODULE
        if _ERROR is not None:
            raise RuntimeError(f"the tfaa CUDA extension failed to load earlier: {_ERROR}") from _ERROR
        if not (torch.version.cuda and torch.cuda.is_available()):
            raise RuntimeError("the tfaa CUDA extension needs a CUDA build of PyTorch and a GPU")
        prebuilt_error = None
        if importlib.util.find_spec(_build.EXT_NAME) is not None:
            try:
                _MODULE = importlib.import_module(_build.EXT_NAME)
                return _MODULE
            except ImportError as e:  # stale build (other torch): fall back to the JIT build
                prebuilt_error = e
        try:
            _MODULE = _jit_build(verbose)
        except Exception as e:  # noqa: BLE001 - reported with its cause
            hint = f" (the prebuilt {_build.EXT_NAME} did not load: {prebuilt_error})" if prebuilt_error else ""
            _ERROR = RuntimeError(f"building the tfaa CUDA extension failed{hint}: {e}")
            raise _ERROR from e
        return _MODULE


if AVAILABLE:
    from . import ops  # noqa: F401,E402  (registers the entry points; builds nothing)
