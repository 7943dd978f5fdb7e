"""Build configuration of the CUDA extension, shared by setup.py and the JIT loader.

Imports only the standard library, so setup.py can load this file by path before the package is
installed. Environment:

- ``TFAA_CUDA_ARCHS``: ";"-separated compute capabilities, default ``"80;90;90a"``
  (each ``XY`` or ``XYa`` becomes ``-gencode=arch=compute_XY,code=sm_XY``).
- ``TFAA_PTXAS_VERBOSE=1``: add ``-Xptxas=-v`` (registers/spills of every kernel in the build log).
- ``TFAA_CUDA_CACHE``: JIT build directory (default ``~/.cache/tfaa/cuda/...``).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import List, Optional

EXT_NAME = "tfaa_kernels._C"
JIT_NAME = "tfaa_cuda_jit"
DEFAULT_ARCHS = "80;90;90a"
# PyTorch glue first, then the kernels (paths relative to the repository root).
SOURCES = ("csrc/tfaa_ops.cpp", "csrc/temporal_attention.cu", "csrc/temporal_conv.cu",
           "csrc/conv_reductions.cu", "csrc/conv_wgmma.cu")

REPO_ROOT = Path(__file__).resolve().parents[2]
CSRC = REPO_ROOT / "csrc"


def arch_list() -> List[str]:
    raw = os.environ.get("TFAA_CUDA_ARCHS", DEFAULT_ARCHS)
    archs = [a.strip().replace(".", "") for a in re.split(r"[;, ]+", raw) if a.strip()]
    for a in archs:
        if not re.fullmatch(r"\d{2,3}a?", a):
            raise ValueError(f"TFAA_CUDA_ARCHS: {a!r} is not a compute capability like 80, 90 or 90a "
                             f"(got TFAA_CUDA_ARCHS={raw!r})")
    if not archs:
        raise ValueError(f"TFAA_CUDA_ARCHS names no architecture (got {raw!r})")
    return archs


def gencode_flags() -> List[str]:
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in arch_list()]


def nvcc_flags() -> List[str]:
    flags = ["-O3", "-lineinfo", "--threads=4"] + gencode_flags()
    if os.environ.get("TFAA_PTXAS_VERBOSE", "0") == "1":
        flags.append("-Xptxas=-v")
    return flags


def cxx_flags() -> List[str]:
    return ["-O3"]


def find_cuda_home() -> Optional[str]:
    """CUDA_HOME / CUDA_PATH, else the directory above nvcc on PATH, else /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.isdir(home):
            return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        return str(Path(os.path.realpath(nvcc)).parent.parent)
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    return None


def _cublas_dirs(cuda_home: Optional[str]) -> List[Path]:
    dirs = []
    if cuda_home:
        dirs += [Path(cuda_home) / sub for sub in
                 ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib")]
    try:  # the nvidia-cublas wheel PyTorch itself loads (nvidia/cu13/lib, nvidia/cublas/lib)
        import importlib.util
        spec = importlib.util.find_spec("nvidia")
        for root in (spec.submodule_search_locations or []) if spec else []:
            dirs += sorted(Path(root).glob("*/lib"))
    except (ImportError, ValueError):
        pass
    return dirs


def cublas_link_flags(cuda_home: Optional[str]) -> List[str]:
    """Link flags for libcublas: the toolkit's, else the nvidia wheel's (by soname). With none
    found, the symbols resolve at load time from the libcublas PyTorch has already loaded."""
    for d in _cublas_dirs(cuda_home):
        if (d / "libcublas.so").exists():
            return [f"-L{d}", "-lcublas", f"-Wl,-rpath,{d}"]
        versioned = sorted(d.glob("libcublas.so.[0-9]*"), key=lambda p: len(p.name))
        if versioned:
            return [f"-L{d}", f"-l:{versioned[0].name}", f"-Wl,-rpath,{d}"]
    return []


def jit_build_dir(torch_version: str, cuda_version: Optional[str]) -> Path:
    base = os.environ.get("TFAA_CUDA_CACHE")
    if base:
        d = Path(base)
    else:
        tag = f"torch{torch_version}-cu{cuda_version}-sm{'_'.join(arch_list())}".replace("+", "_")
        d = Path.home() / ".cache" / "tfaa" / "cuda" / tag
    d.mkdir(parents=True, exist_ok=True)
    return d
