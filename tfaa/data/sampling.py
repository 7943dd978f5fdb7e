"""Which source frames make a training clip, and how they become a tensor.

The thesis (ch. 4.3): "For each input video, we sample its first 8 frames and set the fps to 24
... crop the resolution of the input video to 256x256". Here:

- :func:`sample_frame_indices`: ``num_frames`` frames at ``target_fps`` (source frames resampled
  by time: clip frame ``i`` is the source frame shown at time ``start + i*stride/target_fps``),
  from the first frame (``start=0``) or a random start;
- :func:`frames_to_tensor`: resize the shorter side to ``size``, center crop ``size x size``,
  pixels to ``[-1, 1]``, layout ``(F, 3, H, W)``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ClipTooShortError", "clip_span", "sample_frame_indices", "frames_to_tensor"]


class ClipTooShortError(ValueError):
    """The video has fewer source frames than the requested clip spans."""


def _step(source_fps: float, target_fps: Optional[float], stride: int) -> float:
    return stride * (source_fps / target_fps if target_fps else 1.0)


def clip_span(num_frames: int, source_fps: float, target_fps: Optional[float] = 24.0, stride: int = 1) -> int:
    """Number of source frames a clip starting at frame 0 needs (last index + 1)."""
    return int(math.floor((num_frames - 1) * _step(source_fps, target_fps, stride) + 1e-6)) + 1


def sample_frame_indices(num_source_frames: int, source_fps: float, num_frames: int = 8,
                         target_fps: Optional[float] = 24.0, stride: int = 1,
                         random_start: bool = False, rng: Optional[np.random.Generator] = None) -> List[int]:
    """Source frame indices of one clip.

    Source frames advance by ``stride * source_fps / target_fps`` per clip frame (``stride`` when
    ``target_fps`` is None: native frame rate); index ``i`` is ``floor(start + i*step)``. ``start`` is
    0, or uniform over the valid starts when ``random_start`` (drawn from ``rng``).
    Raises :class:`ClipTooShortError` when the clip does not fit in ``num_source_frames``.
    """
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")
    step = _step(source_fps, target_fps, stride)
    span = clip_span(num_frames, source_fps, target_fps, stride)
    if span > num_source_frames:
        raise ClipTooShortError(f"clip needs {span} source frames ({num_frames} frames at "
                                f"{target_fps or source_fps} fps, stride {stride}, source {source_fps:.3g} fps), "
                                f"video has {num_source_frames}")
    start = 0
    if random_start and num_source_frames > span:
        if rng is None:
            raise ValueError("random_start=True needs an rng")
        start = int(rng.integers(0, num_source_frames - span + 1))
    return [start + int(math.floor(i * step + 1e-6)) for i in range(num_frames)]


def frames_to_tensor(frames: Sequence[np.ndarray], size: int = 256) -> torch.Tensor:
    """``F`` uint8 ``(H, W, 3)`` frames -> float32 ``(F, 3, size, size)`` in ``[-1, 1]``.

    The shorter side is resized to ``size`` (bilinear, antialiased), then a centered
    ``size x size`` crop is taken.
    """
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()  # (F, 3, H, W), 0..255
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    return (x / 127.5 - 1.0).clamp_(-1.0, 1.0).contiguous()
