"""Evaluating folders of videos: frame consistency, CLIPSIM and FVD (thesis Tables 5.2-5.4).

:func:`evaluate` is the Python API behind ``tfaa eval``. Videos come from a caption file (CSV/JSONL:
path, caption — the caption is the prompt CLIPSIM scores against) or a folder (every video / GIF
file below it, and every sub-folder of images as a frame folder). Each video contributes its first
``num_frames`` frames (at ``target_fps``; None = the file's own rate), resized + center-cropped to
``size``. Unreadable or too-short videos are skipped with a warning and reported in the result.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from tfaa.data import ClipTooShortError, VideoReadError, VideoRecord, VideoTextDataset, read_caption_file
from tfaa.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

__all__ = ["records_from_path", "iter_video_batches", "evaluate", "METRICS"]

logger = logging.getLogger(__name__)
METRICS = ("frame_consistency", "clipsim", "fvd")


def records_from_path(path: str) -> List[VideoRecord]:
    """Records of a caption file (``.csv``/``.jsonl``) or of every video below a folder (captions empty)."""
    if os.path.isfile(path):
        return read_caption_file(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is neither a caption file nor a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        media = [f for f in sorted(filenames) if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS + (".gif",)]
        found += [os.path.join(dirpath, f) for f in media]
        if dirpath != path and not dirnames and not media and filenames and \
                all(f.lower().endswith(IMAGE_EXTENSIONS) for f in filenames):
            found.append(dirpath)
    if not found:
        raise ValueError(f"no videos found under {path!r}")
    return [VideoRecord(p, ("",)) for p in found]


def iter_video_batches(records: Sequence[VideoRecord], num_frames: int, size: int, target_fps: Optional[float],
                       batch_size: int, skipped: Dict[str, str]) -> Iterator[Tuple[torch.Tensor, List[str]]]:
    """``((B, F, 3, size, size) in [-1, 1], B captions)`` batches; failures go to ``skipped`` (path -> reason)."""
    ds = VideoTextDataset(records, num_frames=num_frames, target_fps=target_fps, size=size)
    rng = np.random.default_rng(0)
    videos, captions = [], []
    for i, rec in enumerate(records):
        try:
            videos.append(ds.load_clip(i, rng))
        except (VideoReadError, ClipTooShortError) as exc:
            skipped[rec.path] = str(exc)
            logger.warning("eval: skipping %s (%s)", rec.path, exc)
            continue
        captions.append(rec.captions[0])
        if len(videos) == batch_size:
            yield torch.stack(videos), captions
            videos, captions = [], []
    if videos:
        yield torch.stack(videos), captions


def evaluate(videos: str, metrics: Sequence[str] = ("frame_consistency", "clipsim"), real: Optional[str] = None,
             clip_model: Optional[str] = None, i3d: Optional[str] = None, num_frames: int = 8, size: int = 256,
             target_fps: Optional[float] = None, batch_size: int = 8, device: str = "cpu",
             progress: bool = True, clip_scorer=None, i3d_extractor=None) -> Dict[str, object]:
    """Compute ``metrics`` over the videos at ``videos`` (caption file or folder).

    ``clipsim`` needs prompts (a caption file) and a CLIP folder (``clip_model``); ``frame_consistency``
    a CLIP folder; ``fvd`` the real videos (``real``) and I3D weights (``i3d``). ``clip_scorer`` /
    ``i3d_extractor`` (already built) replace the paths (tests). Returns ``{metric: value,
    "num_videos", "num_real_videos", "skipped": {path: reason}}``; per-video means for the CLIP metrics.
    """
    from tqdm.auto import tqdm

    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {list(metrics)}")
    records = records_from_path(videos)
    need_clip = any(m in metrics for m in ("frame_consistency", "clipsim"))
    if "clipsim" in metrics and not all(r.captions[0] for r in records):
        raise ValueError("clipsim needs a prompt per video: pass --videos as a caption file (path, caption)")
    if need_clip and clip_scorer is None:
        if clip_model is None:
            raise ValueError("frame_consistency / clipsim need --clip-model (a local CLIP folder)")
        from .clip_metrics import ClipScorer
        clip_scorer = ClipScorer.from_pretrained(clip_model, device=device)
    if "fvd" in metrics:
        if real is None:
            raise ValueError("fvd needs --real (a caption file or folder of real videos)")
        if i3d_extractor is None:
            if i3d is None:
                raise ValueError("fvd needs --i3d (local I3D weights: state dict or TorchScript)")
            from .fvd import I3DFeatureExtractor
            i3d_extractor = I3DFeatureExtractor(i3d, device=device)

    skipped: Dict[str, str] = {}
    fc, cs, feats = [], [], []
    n = 0
    for batch, caps in tqdm(iter_video_batches(records, num_frames, size, target_fps, batch_size, skipped),
                            desc="eval", disable=not progress, total=-(-len(records) // batch_size)):
        n += batch.shape[0]
        if need_clip:
            emb = clip_scorer.image_embeddings(batch)
            from .clip_metrics import clipsim_from_embeddings, frame_consistency_from_embeddings
            if "frame_consistency" in metrics:
                fc.append(frame_consistency_from_embeddings(emb))
            if "clipsim" in metrics:
                cs.append(clipsim_from_embeddings(emb, clip_scorer.text_embeddings(caps)))
        if "fvd" in metrics:
            feats.append(i3d_extractor.extract(batch))
    if n == 0:
        raise RuntimeError(f"no readable videos in {videos!r}; first failures: {list(skipped.items())[:3]}")
    out: Dict[str, object] = {"num_videos": n}
    if fc:
        out["frame_consistency"] = float(torch.cat(fc).mean())
    if cs:
        out["clipsim"] = float(torch.cat(cs).mean())
    if "fvd" in metrics:
        from .fvd import fvd_from_features
        real_feats, n_real = [], 0
        for batch, _ in iter_video_batches(records_from_path(real), num_frames, size, target_fps, batch_size, skipped):
            real_feats.append(i3d_extractor.extract(batch))
            n_real += batch.shape[0]
        if n_real < 2 or n < 2:
            raise ValueError(f"fvd needs >= 2 readable videos per set, got {n} generated and {n_real} real")
        out["fvd"] = fvd_from_features(np.concatenate(real_feats), np.concatenate(feats))
        out["num_real_videos"] = n_real
    out["skipped"] = skipped
    return out
