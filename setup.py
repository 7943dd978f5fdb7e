"""Build/install tfaa and tfaa_kernels.

``pip install -e . --no-build-isolation`` (torch must already be installed: an isolated build
environment would download a multi-GB CUDA torch). The CUDA extension in csrc/ is built when the
installed PyTorch has CUDA and nvcc is present; otherwise the package installs without it and the
"cuda" backend is unavailable (tfaa_kernels.cuda can JIT-build it later).
"""
from setuptools import find_packages, setup

setup(
    name="tfaa",
    version="0.1.0",
    description="Fused Triton/CUDA kernels for Temporal First-Adjacent Attention and the temporal "
                "1D conv, with a text-to-video training and sampling stack",
    packages=find_packages(include=["tfaa", "tfaa.*", "tfaa_kernels", "tfaa_kernels.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "einops",
        "numpy",
    ],
    entry_points={"console_scripts": ["tfaa=tfaa.cli:main"]},
    extras_require={
        "triton": ["triton"],
        "test": ["pytest", "pytest-benchmark"],
    },
)
