"""Memory-format rule shared by the ops and every kernel backend: outputs follow x's layout."""
from __future__ import annotations

import torch


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is laid out that way (and not also plain contiguous), else NCHW."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
