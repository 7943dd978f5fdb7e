"""Exponential moving average of the temporal weights."""
from __future__ import annotations

from typing import Iterable, List

import torch

__all__ = ["EMA"]


class EMA:
    """``shadow = decay * shadow + (1 - decay) * param`` after every optimizer step, in fp32.

    ``params``: the trainable (temporal) parameters, in a fixed order. :meth:`copy_to` writes the
    averaged weights into parameters (e.g. for export); :meth:`state_dict` / :meth:`load_state_dict`
    round-trip exactly.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: List[torch.Tensor] = [p.detach().float().clone() for p in params]
        self.num_updates = 0

    @torch.no_grad()
    def update(self, params: Iterable[torch.nn.Parameter]) -> None:
        params = [p.detach().float() for p in params]
        if len(params) != len(self.shadow):
            raise ValueError(f"EMA tracks {len(self.shadow)} tensors, got {len(params)}")
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, params: Iterable[torch.nn.Parameter]) -> None:
        for s, p in zip(self.shadow, params):
            p.copy_(s.to(p.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state['shadow'])} tensors, the model {len(self.shadow)}")
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        self.shadow = [s.to(d.device, torch.float32).clone() for s, d in zip(state["shadow"], self.shadow)]
