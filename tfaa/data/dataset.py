"""The video-text training dataset.

:class:`VideoTextDataset` turns :class:`VideoRecord` s into samples
``{"pixel_values": (F, 3, size, size) float32 in [-1, 1], "caption": str, "index": int,
"skipped": [(path, reason), ...]}``.

Determinism: every random choice of a sample (random start, which caption, caption dropout) is
drawn from ``numpy.random.default_rng([seed, epoch, index])``, so a sample depends only on
``(seed, epoch, index)`` — not on worker count or on what was read before — which is what makes
resumed training reproduce an uninterrupted run. Call :meth:`VideoTextDataset.set_epoch`.

Unreadable videos: a sample whose video fails to decode (or is too short) is replaced by the next
readable index (wrapping around), the failure is logged once as a warning, counted in
:attr:`VideoTextDataset.skip_counter` (in the process that read it) and returned in the sample's
``"skipped"`` list so the training loop can count it across DataLoader workers. If no video is
readable, a ``RuntimeError`` lists the first failures.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .records import VideoRecord
from .sampling import ClipTooShortError, clip_span, frames_to_tensor, sample_frame_indices
from .video_io import VideoReadError, read_frames

__all__ = ["SkipCounter", "VideoTextDataset", "collate_video_text", "choose_caption", "sample_rng"]

logger = logging.getLogger(__name__)


class SkipCounter:
    """Counts skipped videos: ``count``, ``by_reason`` (``"unreadable"``/``"too_short"``), ``paths``."""

    def __init__(self) -> None:
        self.by_reason: Counter = Counter()
        self.paths: Dict[str, str] = {}

    @property
    def count(self) -> int:
        return sum(self.by_reason.values())

    def add(self, path: str, reason: str) -> bool:
        """Record one skip; returns True the first time ``path`` is seen (to warn once)."""
        self.by_reason[reason.split(":")[0]] += 1
        first = path not in self.paths
        self.paths.setdefault(path, reason)
        return first

    def state_dict(self) -> dict:
        return {"by_reason": dict(self.by_reason), "paths": dict(self.paths)}

    def load_state_dict(self, state: dict) -> None:
        self.by_reason = Counter(state.get("by_reason", {}))
        self.paths = dict(state.get("paths", {}))

    def __repr__(self) -> str:
        return f"SkipCounter(count={self.count}, by_reason={dict(self.by_reason)})"


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The per-sample generator: a pure function of ``(seed, epoch, index)``."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def choose_caption(captions: Sequence[str], rng: np.random.Generator, dropout: float) -> str:
    """Draw one of ``captions``; with probability ``dropout`` return ``""`` (the unconditional
    prompt, for classifier-free guidance). Always consumes two draws so the stream is fixed."""
    pick = int(rng.integers(0, len(captions)))
    drop = rng.random() < dropout
    return "" if drop else captions[pick]


class VideoTextDataset(Dataset):
    """Clips of ``num_frames`` frames at ``target_fps`` from videos with captions (thesis ch. 4.3).

    Args:
        records: the videos (see :mod:`tfaa.data.records` / :mod:`tfaa.data.layouts`).
        num_frames: frames per clip (thesis: 8).
        target_fps: clip frame rate (thesis: 24); None keeps the source frame rate.
        size: output height = width after resize of the shorter side + center crop (thesis: 256).
        stride: take every ``stride``-th frame at ``target_fps``.
        random_start: start at a random valid frame instead of the first.
        caption_dropout: probability of replacing the caption by ``""`` (CFG training).
        seed: base seed of the per-sample generators.
        frames_fps: frame rate of frame folders whose record gives none.
    """

    def __init__(self, records: Sequence[VideoRecord], num_frames: int = 8, target_fps: Optional[float] = 24.0,
                 size: int = 256, stride: int = 1, random_start: bool = False, caption_dropout: float = 0.0,
                 seed: int = 0, frames_fps: float = 24.0) -> None:
        if len(records) == 0:
            raise ValueError("VideoTextDataset: no videos (the caption file / dataset folder lists none)")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if size < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {caption_dropout}")
        if target_fps is not None and target_fps <= 0:
            raise ValueError(f"target_fps must be > 0 or None, got {target_fps}")
        self.records = list(records)
        self.num_frames, self.target_fps, self.size = num_frames, target_fps, size
        self.stride, self.random_start, self.caption_dropout = stride, random_start, caption_dropout
        self.seed, self.frames_fps = seed, frames_fps
        self.epoch = 0
        self.skip_counter = SkipCounter()
        self._bad: Dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random choices (start, caption, dropout) samples use."""
        self.epoch = int(epoch)

    def load_clip(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """Decode and transform the clip of record ``index``: ``(F, 3, size, size)`` in [-1, 1].
        Raises :class:`VideoReadError` or :class:`ClipTooShortError`."""
        rec = self.records[index]
        default_fps = rec.fps or self.frames_fps
        max_frames = None
        if not self.random_start:
            # decode only the frames the first clip needs; the fps is known only after opening, so
            # read a generous prefix (source fps up to 8x the target), then all when that is short.
            max_frames = clip_span(self.num_frames, 8 * (self.target_fps or 1.0), self.target_fps, self.stride)
        frames, fps = read_frames(rec.path, max_frames=max_frames, default_fps=default_fps)
        needed = clip_span(self.num_frames, fps, self.target_fps, self.stride)
        if max_frames is not None and len(frames) == max_frames and needed > max_frames:
            frames, fps = read_frames(rec.path, max_frames=None, default_fps=default_fps)
        idx = sample_frame_indices(len(frames), fps, self.num_frames, self.target_fps, self.stride,
                                   self.random_start, rng)
        return frames_to_tensor([frames[i] for i in idx], self.size)

    def __getitem__(self, index: int) -> dict:
        skipped: List[Tuple[str, str]] = []
        n = len(self.records)
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                skipped.append((self.records[i].path, self._bad[i]))
                continue
            rng = sample_rng(self.seed, self.epoch, i)
            try:
                pixels = self.load_clip(i, rng)
            except (VideoReadError, ClipTooShortError) as exc:
                reason = ("too_short: " if isinstance(exc, ClipTooShortError) else "unreadable: ") + str(exc)
                self._bad[i] = reason
                if self.skip_counter.add(self.records[i].path, reason):
                    logger.warning("skipping video %s (%s)", self.records[i].path, reason)
                skipped.append((self.records[i].path, reason))
                continue
            caption = choose_caption(self.records[i].captions, rng, self.caption_dropout)
            return {"pixel_values": pixels, "caption": caption, "index": i, "skipped": skipped}
        raise RuntimeError(f"VideoTextDataset: none of the {n} videos is readable; first failures: "
                           + "; ".join(r for _, r in skipped[:3]))


def collate_video_text(samples: List[dict]) -> dict:
    """Batch samples: ``pixel_values`` or ``latents`` stacked to ``(B, F, C, H, W)``, ``caption``
    a list, ``index`` a LongTensor, ``skipped`` the concatenated list."""
    out: dict = {"caption": [s["caption"] for s in samples],
                 "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
                 "skipped": [x for s in samples for x in s.get("skipped", [])]}
    for key in ("pixel_values", "latents"):
        if key in samples[0]:
            out[key] = torch.stack([s[key] for s in samples])
    return out
