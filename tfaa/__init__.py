"""tfaa: the text-to-video model stack built on the ``tfaa_kernels`` ops.

- ``tfaa.models``: frame position embedding, TFAA block, temporal conv block, the video UNet
  (an inflated SD 1.x ``UNet2DConditionModel``) and the temporal-weights container.
- ``tfaa.pipeline``: ``TFAAPipeline``, the text-to-video diffusers pipeline.
- ``tfaa.testing``: tiny random SD 1.x components for tests.
- ``tfaa.cli``: the ``tfaa`` command (``python -m tfaa``).

Heavy imports (diffusers, transformers) happen lazily on first attribute access.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "FramePositionEmbedding": "tfaa.models",
    "TFAABlock": "tfaa.models",
    "TemporalConvBlock": "tfaa.models",
    "VideoUNet": "tfaa.models",
    "TemporalWeights": "tfaa.models",
    "TFAAPipeline": "tfaa.pipeline",
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfaa' has no attribute {name!r}")
