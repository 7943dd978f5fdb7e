"""Decoding video files, GIFs and folders of frames into RGB uint8 arrays.

One job: turn a path into ``(frames, fps)`` where ``frames`` is a list of ``(H, W, 3)`` uint8
arrays in display order. Backends:

- ``.mp4 .webm .avi .mkv .mov .m4v``: PyAV (``av``), the frame rate from the stream's
  ``average_rate`` (``guessed_rate`` as fallback);
- ``.gif``: Pillow, the frame rate from the first frame's ``duration`` (ms; 100 ms when absent,
  like browsers);
- a directory: its image files (png/jpg/jpeg/webp/bmp) in natural order, at ``default_fps``.

Every failure raises :class:`VideoReadError` naming the path and the cause, so a dataset can
skip the video and count it.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["VideoReadError", "VIDEO_EXTENSIONS", "IMAGE_EXTENSIONS", "read_frames", "is_media_path"]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class VideoReadError(RuntimeError):
    """A video, GIF or frame folder could not be decoded (missing, corrupt, empty, unsupported)."""


def is_media_path(path: str) -> bool:
    """True for a directory or a file with a video / ``.gif`` extension."""
    ext = os.path.splitext(path)[1].lower()
    return os.path.isdir(path) or ext in VIDEO_EXTENSIONS or ext == ".gif"


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_av(path: str, max_frames: Optional[int]) -> Tuple[List[np.ndarray], float]:
    import av

    frames: List[np.ndarray] = []
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if fps <= 0:
        raise VideoReadError(f"{path}: the stream has no frame rate")
    return frames, fps


def _read_gif(path: str, max_frames: Optional[int]) -> Tuple[List[np.ndarray], float]:
    from PIL import Image, ImageSequence

    frames: List[np.ndarray] = []
    with Image.open(path) as im:
        duration_ms = im.info.get("duration") or 100
        for frame in ImageSequence.Iterator(im):
            frames.append(np.asarray(frame.convert("RGB")))
            if max_frames is not None and len(frames) >= max_frames:
                break
    return frames, 1000.0 / float(duration_ms)


def _read_dir(path: str, max_frames: Optional[int], default_fps: float) -> Tuple[List[np.ndarray], float]:
    from PIL import Image

    names = sorted((n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key)
    if max_frames is not None:
        names = names[:max_frames]
    frames = []
    for n in names:
        with Image.open(os.path.join(path, n)) as im:
            frames.append(np.asarray(im.convert("RGB")))
    return frames, float(default_fps)


def read_frames(path: str, max_frames: Optional[int] = None,
                default_fps: float = 24.0) -> Tuple[List[np.ndarray], float]:
    """Decode up to ``max_frames`` frames (all when None) of a video, GIF or frame folder.

    Returns ``(frames, fps)``: a non-empty list of ``(H, W, 3)`` uint8 arrays, all the same size,
    and the source frame rate (``default_fps`` for a frame folder).
    Raises :class:`VideoReadError` on any failure.
    """
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: no such file or directory")
    ext = os.path.splitext(path)[1].lower()
    try:
        if os.path.isdir(path):
            frames, fps = _read_dir(path, max_frames, default_fps)
        elif ext == ".gif":
            frames, fps = _read_gif(path, max_frames)
        elif ext in VIDEO_EXTENSIONS:
            frames, fps = _read_av(path, max_frames)
        else:
            raise VideoReadError(f"{path}: unsupported extension {ext!r} "
                                 f"(use one of {VIDEO_EXTENSIONS + ('.gif',)} or a frame folder)")
    except VideoReadError:
        raise
    except Exception as exc:  # decoder errors come in many types (av.error.*, OSError, ValueError)
        raise VideoReadError(f"{path}: {type(exc).__name__}: {exc}") from exc
    if not frames:
        raise VideoReadError(f"{path}: no frames")
    shape = frames[0].shape
    if any(f.shape != shape for f in frames):
        raise VideoReadError(f"{path}: frames differ in size")
    return frames, fps
