"""Writing generated videos: GIF (Pillow via imageio) and MP4 (PyAV or imageio-ffmpeg)."""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch

VIDEO_SUFFIXES = (".gif", ".mp4")


def to_uint8_frames(frames: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """``(F, H, W, 3)`` float in [0, 1] (numpy or torch) -> ``(F, H, W, 3)`` uint8."""
    if torch.is_tensor(frames):
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (F, H, W, 3), got {frames.shape}")
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_video(frames, path: Union[str, os.PathLike], fps: float = 8.0) -> str:
    """Write ``frames`` (``(F, H, W, 3)`` float in [0, 1]) to ``path`` (``.gif`` or ``.mp4``, by suffix).

    MP4 needs PyAV (``pip install av``) or imageio-ffmpeg (``pip install imageio-ffmpeg``).
    Returns the path written.
    """
    import imageio.v3 as iio

    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"output file {path!r} must end in one of {VIDEO_SUFFIXES}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    data = to_uint8_frames(frames)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if suffix == ".gif":
        iio.imwrite(path, data, extension=".gif", duration=1000.0 / fps, loop=0)
        return path
    if data.shape[1] % 2 or data.shape[2] % 2:  # yuv420p needs even sizes
        data = np.pad(data, ((0, 0), (0, data.shape[1] % 2), (0, data.shape[2] % 2), (0, 0)), mode="edge")
    try:
        import av  # noqa: F401
    except ImportError:
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise RuntimeError("writing .mp4 needs PyAV or imageio-ffmpeg; install one with "
                               "`pip install av` or `pip install imageio-ffmpeg`, or write a .gif") from None
        iio.imwrite(path, data, extension=".mp4", fps=fps)
        return path
    iio.imwrite(path, data, plugin="pyav", codec="libx264", fps=int(round(fps)))
    return path
