"""Triton backend: importing this package registers its kernels with tfaa_kernels.backends.

Kernels run on CUDA tensors, or on CPU tensors in Triton's interpreter when TRITON_INTERPRET=1
is set before import (fp32, slow: tests use tiny shapes).
"""
try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover - triton is a hard dependency on Linux
    AVAILABLE = False
else:
    AVAILABLE = True
    from . import temporal_attention  # noqa: F401  (registers impls)
    from . import spatial_attention  # noqa: F401  (registers impls)
    from . import group_norm_silu  # noqa: F401  (registers impls)
    from . import group_norm_silu_backward  # noqa: F401  (registers impls)
    from . import temporal_conv  # noqa: F401  (registers impls)
