"""The demo's synthetic captioned video set: every colour x shape x direction combination once.

Frames come from :func:`tfaa.data.synthetic.render_clip` (the shape crosses half the frame along
its captioned direction, with ``cfg.motion_blur`` faint trailing copies). The set is written as GIFs + ``captions.jsonl`` (the layout
:func:`tfaa.data.read_caption_file` reads) and as ``clips.npz`` (uint8 frames + captions) for training.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from typing import List

import numpy as np
from tqdm.auto import tqdm

from tfaa.data.synthetic import ClipSpec, render_clip
from tfaa.video_io import save_video

from .config import DemoConfig

__all__ = ["ClipSet", "demo_specs", "make_clip_set", "load_clip_set"]


@dataclass
class ClipSet:
    """``frames``: ``(N, F, H, W, 3)`` uint8; ``captions``: ``N`` strings; ``specs``: what each clip shows."""

    frames: np.ndarray
    captions: List[str]
    specs: List[ClipSpec]


def demo_specs(cfg: DemoConfig) -> List[ClipSpec]:
    """One :class:`ClipSpec` per colour x shape x direction, on the default background."""
    return [ClipSpec(shape=s, color=c, direction=d)
            for c, s, d in itertools.product(cfg.colors, cfg.shapes, cfg.directions)]


def make_clip_set(cfg: DemoConfig, out_dir: str, progress: bool = True) -> ClipSet:
    """Render the set and write ``out_dir/videos/NNNNNN.gif``, ``captions.jsonl`` and ``clips.npz``."""
    specs = demo_specs(cfg)
    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    frames, lines = [], []
    for i, spec in enumerate(tqdm(specs, desc="synthetic clips", disable=not progress)):
        clip = render_clip(spec, cfg.num_frames, cfg.size, motion_blur=cfg.motion_blur, path_start=cfg.path_start)
        rel = os.path.join("videos", f"{i:06d}.gif")
        save_video(clip.astype(np.float32) / 255.0, os.path.join(out_dir, rel), fps=4.0)
        frames.append(clip)
        lines.append({"path": rel, "caption": spec.caption, "shape": spec.shape, "color": spec.color,
                      "direction": spec.direction})
    with open(os.path.join(out_dir, "captions.jsonl"), "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)
    data = np.stack(frames)
    np.savez_compressed(os.path.join(out_dir, "clips.npz"), frames=data,
                        captions=np.array([s.caption for s in specs]))
    return ClipSet(frames=data, captions=[s.caption for s in specs], specs=specs)


def load_clip_set(cfg: DemoConfig, out_dir: str) -> ClipSet:
    """Read back what :func:`make_clip_set` wrote (``clips.npz``)."""
    with np.load(os.path.join(out_dir, "clips.npz")) as z:
        frames, captions = z["frames"], [str(c) for c in z["captions"]]
    return ClipSet(frames=frames, captions=captions, specs=demo_specs(cfg))
