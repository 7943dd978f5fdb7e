"""Output allocation for every kernel backend.

``POISON = True`` (or ``TFAA_POISON_OUTPUTS=1`` in the environment) fills each new output with NaN
(integer outputs with -1) before a kernel writes it, so a test sees any element a kernel forgot.
"""
from __future__ import annotations

import os

import torch

POISON = os.environ.get("TFAA_POISON_OUTPUTS", "0") == "1"


def empty(shape, dtype: torch.dtype, device, memory_format=torch.contiguous_format) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    if POISON:
        t.fill_(float("nan") if t.is_floating_point() else -1)
    return t
