"""A synthetic captioned-video dataset: coloured shapes moving in captioned directions.

Each video shows one shape (circle, square, triangle) of one colour moving in one direction on a
plain background; its caption says so, e.g. ``"a red circle moving left"``. Deterministic: the
same arguments (``seed`` included) give byte-identical frames and captions.

Usage::

    from tfaa.data.synthetic import make_synthetic_dataset
    captions = make_synthetic_dataset("data/shapes", num_videos=32, num_frames=8, size=64, seed=0)
    # data/shapes/captions.jsonl + data/shapes/videos/000000.gif ...
    from tfaa.data import VideoTextDataset, read_caption_file
    ds = VideoTextDataset(read_caption_file(captions), num_frames=8, size=64)

:func:`render_clip` draws one clip in memory (``(F, H, W, 3)`` uint8) without writing files.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import List, Tuple

import numpy as np

__all__ = ["COLORS", "SHAPES", "DIRECTIONS", "PATH_START_RANGE", "ClipSpec", "render_clip", "random_spec", "make_synthetic_dataset"]

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230),
          "yellow": (235, 210, 40), "purple": (150, 60, 200), "white": (240, 240, 240)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (dy, dx)
#: render_clip's path_start values that keep the shape inside the frame (centred .. ending at the edge)
PATH_START_RANGE = (-0.5, -0.25)


@dataclass(frozen=True)
class ClipSpec:
    """What one synthetic clip shows; ``caption`` is derived from it."""

    shape: str
    color: str
    direction: str
    background: Tuple[int, int, int] = (20, 20, 30)

    @property
    def caption(self) -> str:
        return f"a {self.color} {self.shape} moving {self.direction}"


def _mask(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy * dy + dx * dx <= r * r
    if shape == "square":
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)
    if shape == "triangle":  # apex up, base at cy + r
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render_clip(spec: ClipSpec, num_frames: int = 8, size: int = 64, motion_blur: int = 0,
                path_start: float = -0.5) -> np.ndarray:
    """Draw ``spec`` as ``(num_frames, size, size, 3)`` uint8. The shape (radius ``size/8``) travels
    ``size/2`` pixels along its direction over the clip.

    ``path_start``: where the path starts relative to the frame centre, in units of the travel along
    the direction; the path ends at ``path_start + 1``. -0.5 (default): centred on the frame centre,
    so clips of opposite directions cover the same positions. In [-0.5, -0.25] (-0.25: the path
    starts a quarter before the centre and ends at the frame edge): the later frames of a
    clip lie on the side of its direction, so where the shape is tells the direction.

    ``motion_blur``: number of faint trailing copies behind the shape (a camera's motion blur),
    copy ``j = 1..motion_blur`` displaced by ``0.6 * j`` of a frame step against the direction and
    blended over the background with opacity ``0.35 * (1 - (j - 1) / motion_blur)``. It makes the
    direction visible in a single frame, as blur does in real video; the trail stays far closer to
    the background colour than to any shape colour. 0 (default): sharp frames.
    """
    if spec.direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {tuple(DIRECTIONS)}, got {spec.direction!r}")
    if spec.color not in COLORS:
        raise ValueError(f"color must be one of {tuple(COLORS)}, got {spec.color!r}")
    if not isinstance(motion_blur, int) or motion_blur < 0:
        raise ValueError(f"motion_blur must be an integer >= 0, got {motion_blur!r}")
    lo, hi = PATH_START_RANGE
    if not lo <= path_start <= hi:
        raise ValueError(f"path_start must be in [{lo}, {hi}] (the shape stays inside the frame), got {path_start!r}")
    dy, dx = DIRECTIONS[spec.direction]
    r = size / 8
    travel = size / 2
    step = travel / max(num_frames - 1, 1)
    bg = np.array(spec.background, np.float32)
    fg = np.array(COLORS[spec.color], np.float32)
    out = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for f in range(num_frames):
        t = f / max(num_frames - 1, 1) + path_start  # path_start .. path_start + 1
        cy, cx = size / 2 + dy * travel * t, size / 2 + dx * travel * t
        frame = np.empty((size, size, 3), dtype=np.float32)
        frame[:] = bg
        for j in range(motion_blur, 0, -1):  # farthest (faintest) copy first
            alpha = 0.35 * (1 - (j - 1) / motion_blur)
            back = 0.6 * j * step
            frame[_mask(spec.shape, size, cy - dy * back, cx - dx * back, r)] = (1 - alpha) * bg + alpha * fg
        frame[_mask(spec.shape, size, cy, cx, r)] = fg
        out[f] = frame.round().astype(np.uint8)
    return out


def random_spec(rng: np.random.Generator) -> ClipSpec:
    """A uniformly random shape, colour and direction, and a dark random background."""
    bg = tuple(int(v) for v in rng.integers(0, 60, size=3))
    return ClipSpec(shape=SHAPES[rng.integers(len(SHAPES))],
                    color=list(COLORS)[rng.integers(len(COLORS))],
                    direction=list(DIRECTIONS)[rng.integers(len(DIRECTIONS))], background=bg)


def _write_gif(frames: np.ndarray, path: str, fps: float) -> None:
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=round(1000 / fps), loop=0, optimize=False)


def _write_frames(frames: np.ndarray, path: str) -> None:
    from PIL import Image

    os.makedirs(path, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(path, f"{i:05d}.png"))


def _write_mp4(frames: np.ndarray, path: str, fps: float) -> None:
    import fractions

    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_synthetic_dataset(out_dir: str, num_videos: int = 16, num_frames: int = 8, size: int = 64,
                           fps: float = 24.0, seed: int = 0, format: str = "gif",
                           caption_file: str = "captions.jsonl") -> str:
    """Write ``num_videos`` synthetic clips and a JSONL caption file under ``out_dir``.

    Args:
        format: ``"gif"`` (``videos/NNNNNN.gif``; GIF stores whole centiseconds, so 24 fps is
            written as 25 fps), ``"frames"`` (``videos/NNNNNN/00000.png ...``, the fps in the caption
            file) or ``"mp4"`` (MPEG-4 part 2 via PyAV; ``size`` must be even).
        size: frame height = width in pixels.
    Returns the caption file's path. Each JSONL line: ``{"path", "caption", "fps"?, "shape",
    "color", "direction"}`` (extra keys are ignored by :func:`tfaa.data.read_caption_file`).
    """
    if format not in ("gif", "frames", "mp4"):
        raise ValueError(f"format must be 'gif', 'frames' or 'mp4', got {format!r}")
    if num_videos < 1 or num_frames < 1 or size < 8:
        raise ValueError(f"need num_videos >= 1, num_frames >= 1, size >= 8; got {num_videos}, {num_frames}, {size}")
    if format == "mp4" and size % 2:
        raise ValueError(f"format='mp4' needs an even size, got {size}")
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    lines: List[dict] = []
    for i in range(num_videos):
        spec = random_spec(rng)
        frames = render_clip(spec, num_frames, size)
        rel = os.path.join("videos", f"{i:06d}" + {"gif": ".gif", "frames": "", "mp4": ".mp4"}[format])
        path = os.path.join(out_dir, rel)
        if format == "gif":
            _write_gif(frames, path, fps)
        elif format == "frames":
            _write_frames(frames, path)
        else:
            _write_mp4(frames, path, fps)
        line = {"path": rel, "caption": spec.caption, **{k: v for k, v in asdict(spec).items() if k != "background"}}
        if format == "frames":
            line["fps"] = fps
        lines.append(line)
    cap_path = os.path.join(out_dir, caption_file)
    with open(cap_path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)
    return cap_path
