"""Public ops: validation, backend dispatch, torch.library custom ops and autograd, one file per op."""
from .attention import first_adjacent_attention
from .conv import temporal_conv1d

__all__ = ["first_adjacent_attention", "temporal_conv1d"]
