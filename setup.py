"""Build/install tfaa and tfaa_kernels.

``pip install -e . --no-build-isolation`` (torch must already be installed: an isolated build
environment would download a multi-GB CUDA torch). The CUDA extension in csrc/ is built when the
installed PyTorch has CUDA and nvcc is present; otherwise the package installs without it and the
"cuda" backend is unavailable (tfaa_kernels.cuda can JIT-build it later).

CUDA extension switches (environment): TFAA_FORCE_CUDA_BUILD=1 builds it or fails;
TFAA_SKIP_CUDA_BUILD=1 never builds it; TFAA_CUDA_ARCHS="80;90;90a" (the default) picks the
-gencode targets; TFAA_PTXAS_VERBOSE=1 prints registers/spills; MAX_JOBS caps ninja's jobs.
"""
import importlib.util
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

_ROOT = Path(__file__).resolve().parent


def _load_build_config():
    """tfaa_kernels/cuda/_build.py by path (stdlib only), without importing the package."""
    spec = importlib.util.spec_from_file_location("_tfaa_cuda_build", _ROOT / "tfaa_kernels" / "cuda" / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cuda_extension_args() -> dict:
    """ext_modules/cmdclass for the CUDA extension, or {} (with one line saying why) when it is
    not built."""
    force = os.environ.get("TFAA_FORCE_CUDA_BUILD", "0") == "1"
    if os.environ.get("TFAA_SKIP_CUDA_BUILD", "0") == "1":
        if force:
            raise RuntimeError("TFAA_FORCE_CUDA_BUILD=1 and TFAA_SKIP_CUDA_BUILD=1 contradict each other")
        print("tfaa: TFAA_SKIP_CUDA_BUILD=1, installing without the CUDA extension", file=sys.stderr)
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as e:
        why = f"PyTorch's extension builder is not importable ({e})"
    else:
        if not torch.version.cuda:
            why = f"the installed PyTorch {torch.__version__} has no CUDA"
        elif CUDA_HOME is None:
            why = "no CUDA toolkit (nvcc) found; set CUDA_HOME"
        else:
            cfg = _load_build_config()
            ext = CUDAExtension(
                name=cfg.EXT_NAME,
                sources=list(cfg.SOURCES),
                extra_compile_args={"cxx": cfg.cxx_flags(), "nvcc": cfg.nvcc_flags()},
                extra_link_args=cfg.cublas_link_flags(CUDA_HOME),
            )
            print(f"tfaa: building the CUDA extension {cfg.EXT_NAME} for sm_{', sm_'.join(cfg.arch_list())} "
                  f"(CUDA_HOME={CUDA_HOME})", file=sys.stderr)
            return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)}}
    if force:
        raise RuntimeError(f"TFAA_FORCE_CUDA_BUILD=1 but the CUDA extension cannot be built: {why}")
    print(f"tfaa: installing without the CUDA extension: {why} (the 'cuda' backend can JIT-build it later)",
          file=sys.stderr)
    return {}


setup(
    name="tfaa",
    version="0.1.0",
    description="Fused Triton/CUDA kernels for Temporal First-Adjacent Attention and the temporal "
                "1D conv, with a text-to-video training and sampling stack",
    packages=find_packages(include=["tfaa", "tfaa.*", "tfaa_kernels", "tfaa_kernels.*"]),
    python_requires=">=3.10",
    # torch is not listed here on purpose: install it first (scripts/install.sh), so pip never
    # swaps the installed build for another one.
    install_requires=[
        "einops",
        "numpy",
        "triton",
        "diffusers>=0.30",
        "transformers",
        "accelerate",
        "safetensors",
        "pyyaml",
        "imageio",
        "pillow",
        "tqdm",
        "av",
    ],
    package_data={"tfaa.train": ["configs/*.yaml"]},
    entry_points={"console_scripts": ["tfaa=tfaa.cli:main"]},
    extras_require={
        "test": ["pytest", "pytest-benchmark", "scipy"],
        "bench": ["matplotlib", "pytest-benchmark"],
        "train": ["tensorboard", "scipy"],
    },
    **_cuda_extension_args(),
)
