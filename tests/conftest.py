"""Test setup. Without CUDA, Triton kernels run in the CPU interpreter: TRITON_INTERPRET must be set
before triton.jit decorates them (i.e. before tfaa_kernels.triton is imported). Tests marked
``gpu`` run only where CUDA is available."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def poison(monkeypatch):
    """Kernel outputs start as NaN, so an element no kernel wrote shows up as NaN."""
    from tfaa_kernels import _alloc
    monkeypatch.setattr(_alloc, "POISON", True)
    if torch.cuda.is_available():  # also dirty the caching allocator's free blocks
        junk = torch.full((64 << 20,), float("nan"), device="cuda")
        del junk


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
