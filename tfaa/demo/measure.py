"""A weights-free temporal-consistency measure for clips of the synthetic set.

The captioned shape is tracked by colour: every pixel is assigned to the nearest colour of the
palette (the set's shape colours + its background); the pixels of the caption's colour form the
shape's mask, their mean position its centroid. Per video:

- ``detected``: fraction of frames where the mask has at least ``MIN_AREA_FRACTION * H * W`` pixels;
- ``direction_agreement``: over consecutive frame pairs with the shape found in both, the fraction
  of steps that move at least ``MIN_STEP_PX`` pixels along the captioned direction and more along it
  than across it;
- ``displacement``: signed displacement along the captioned direction from the first to the last
  frame where the shape is found, in frame widths (the real clips travel 0.5);
- ``jitter_px``: mean magnitude of the centroid's second difference (deviation from constant
  velocity), in pixels, over frame triples with the shape found;
- ``frame_change``: mean absolute pixel difference between consecutive frames, in [0, 1].

The same function measures the real clips (the reference) and generated ones.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np

from tfaa.data.synthetic import COLORS, DIRECTIONS, ClipSpec

__all__ = ["MIN_AREA_FRACTION", "MIN_STEP_PX", "METRICS", "parse_caption", "track_centroids", "measure_video",
           "summarize"]

MIN_AREA_FRACTION = 0.01
MIN_STEP_PX = 0.5
METRICS = ("detected", "direction_agreement", "displacement", "jitter_px", "frame_change")


def parse_caption(caption: str) -> tuple:
    """``"a red circle moving left"`` -> ``("red", "circle", "left")``."""
    words = caption.split()
    if len(words) != 5 or words[3] != "moving" or words[1] not in COLORS or words[4] not in DIRECTIONS:
        raise ValueError(f"caption {caption!r} is not 'a <color> <shape> moving <direction>'")
    return words[1], words[2], words[4]


def track_centroids(video: np.ndarray, color: str, palette: Sequence[str]) -> np.ndarray:
    """``(F, 2)`` centroids ``(y, x)`` in pixels of ``color``'s nearest-palette mask; NaN where not found.

    ``palette``: the shape colours that can appear; the background colour is added to it.
    """
    if color not in palette:
        raise ValueError(f"color {color!r} is not in the palette {tuple(palette)}")
    names = list(palette)
    refs = np.array([COLORS[c] for c in names] + [ClipSpec("circle", names[0], "left").background], np.float32)
    f, h, w, _ = video.shape
    dist = ((video.astype(np.float32)[..., None, :] - refs) ** 2).sum(-1)  # (F, H, W, P+1)
    mask = dist.argmin(-1) == names.index(color)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.full((f, 2), np.nan)
    for i in range(f):
        area = mask[i].sum()
        if area >= max(1, math.ceil(MIN_AREA_FRACTION * h * w)):
            out[i] = (yy[mask[i]].mean(), xx[mask[i]].mean())
    return out


def measure_video(video: np.ndarray, caption: str, palette: Sequence[str]) -> Dict[str, float]:
    """The metrics of :data:`METRICS` for one ``(F, H, W, 3)`` uint8 video (NaN when undefined)."""
    color, _, direction = parse_caption(caption)
    u = np.array(DIRECTIONS[direction], np.float64)  # (dy, dx) unit vector
    c = track_centroids(video, color, palette)
    found = ~np.isnan(c[:, 0])
    steps = [c[i + 1] - c[i] for i in range(len(c) - 1) if found[i] and found[i + 1]]
    along = np.array([s @ u for s in steps])
    across = np.array([abs(s[0] * u[1] - s[1] * u[0]) for s in steps])
    agree = float(np.mean((along >= MIN_STEP_PX) & (along > across))) if steps else math.nan
    idx = np.flatnonzero(found)
    disp = float((c[idx[-1]] - c[idx[0]]) @ u / video.shape[2]) if len(idx) >= 2 else math.nan
    second = [np.linalg.norm(c[i + 1] - 2 * c[i] + c[i - 1]) for i in range(1, len(c) - 1)
              if found[i - 1] and found[i] and found[i + 1]]
    jitter = float(np.mean(second)) if second else math.nan
    v = video.astype(np.float32) / 255.0
    change = float(np.abs(v[1:] - v[:-1]).mean()) if len(v) > 1 else math.nan
    return dict(detected=float(found.mean()), direction_agreement=agree, displacement=disp, jitter_px=jitter,
                frame_change=change)


def summarize(rows: List[Dict[str, float]]) -> Dict[str, object]:
    """Mean of each metric over videos (NaNs skipped; None when every video is NaN) and the video count."""
    out: Dict[str, object] = {"videos": len(rows)}
    for m in METRICS:
        vals = [r[m] for r in rows if not math.isnan(r[m])]
        out[m] = float(np.mean(vals)) if vals else None
        out[f"{m}_defined"] = len(vals)
    return out
