"""torch.autocast support for the public ops.

Custom ops are opaque to autocast, so under ``torch.autocast`` the public ops cast their floating
inputs to the autocast dtype themselves — what nn.Linear / nn.Conv do — before validation and
dispatch (the casts are differentiable: gradients reach fp32 parameters in fp32)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def autocast_inputs(*tensors: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if first is None:
        return tensors
    dev = first.device.type
    if dev not in ("cuda", "cpu") or not torch.is_autocast_enabled(dev):
        return tensors
    dt = torch.get_autocast_dtype(dev)
    return tuple(t.to(dt) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                 for t in tensors)
