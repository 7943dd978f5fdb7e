"""Public ops: validation, backend dispatch, torch.library custom ops and autograd, one file per op."""
from .attention import first_adjacent_attention
from .conv import temporal_conv1d
from .group_norm import group_norm_silu

__all__ = ["first_adjacent_attention", "temporal_conv1d", "group_norm_silu"]
