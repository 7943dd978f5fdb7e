"""Public ops: validation, backend dispatch, torch.library custom ops and autograd, one file per op."""
from .attention import first_adjacent_attention

__all__ = ["first_adjacent_attention"]
