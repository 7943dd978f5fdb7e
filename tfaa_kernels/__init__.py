"""tfaa_kernels: fused kernels for Temporal First-Adjacent Attention and the temporal 1D conv.

Public ops (shapes and layouts in each docstring and DESIGN.md §1):

- :func:`first_adjacent_attention` ``(q, k, v, num_frames, mode="temporal", scale=None, backend="auto")``
- :func:`temporal_conv1d` ``(x, weight, bias, num_frames, backend="auto", *, norm=None, activation=None)``
  (``norm=GroupNormSpec(num_groups, weight, bias, eps)``, ``activation="silu"``: the fused
  GroupNorm -> SiLU -> conv layer of the temporal conv block)
- :func:`group_norm_silu` ``(x, num_groups, weight=None, bias=None, eps=1e-5, activation="silu", backend="auto")``
  (``F.silu(F.group_norm(...))`` for inference speed: Triton statistics + apply on CUDA without grad)
- :func:`available_backends` ``(device=None)``
- :func:`auto_for_cuda_graphs` ``(enabled=True)``: a context in which ``backend="auto"`` chooses by
  GPU time alone, for code captured in a CUDA graph (wrap the warm-up and the capture)

``tfaa_kernels.reference`` holds the pure-PyTorch einops reference every backend is tested against.
"""
from . import reference
from .backends import auto_for_cuda_graphs, available_backends
from .backends import load_backends as _load_backends
from .ops import first_adjacent_attention, group_norm_silu, temporal_conv1d
from .ops.conv import GroupNormSpec

_load_backends()

__version__ = "0.1.0"
__all__ = ["first_adjacent_attention", "temporal_conv1d", "group_norm_silu", "GroupNormSpec", "available_backends",
           "auto_for_cuda_graphs", "reference", "__version__"]
