"""Latent caching: encode every clip once with the frozen VAE, then train from the cached latents.

Layout of a cache folder::

    meta.json               {"num_frames", "size", "target_fps", "stride", "scaling_factor", "count", "skipped"}
    manifest.jsonl          {"index", "file", "path", "captions"} per cached clip
    000000.safetensors      {"latents": (F, 4, size/8, size/8)}, already multiplied by the VAE's scaling factor

Latents are the posterior mean (``latent_dist.mode()``), the same as :func:`encode_pixels` uses when
training from pixels, so a cached run and an uncached run see the same latents. The clip's frame
choice is that of epoch 0 (a cache freezes ``random_start``); caption choice and caption dropout
stay random per epoch. Every file is written to a temporary name and renamed, ``meta.json`` last:
an interrupted caching run is resumed by calling :func:`cache_latents` again.
"""
from __future__ import annotations

import json
import logging
import os
from typing import List, Optional

import torch
from torch.utils.data import Dataset

from .dataset import VideoTextDataset, choose_caption, sample_rng
from .sampling import ClipTooShortError
from .video_io import VideoReadError

__all__ = ["encode_pixels", "cache_latents", "LatentDataset"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def encode_pixels(vae, pixel_values: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """``(B, F, 3, H, W)`` pixels in [-1, 1] -> ``(B, F, 4, H/8, W/8)`` scaled latents (posterior
    mean times ``vae.config.scaling_factor``), encoded ``chunk`` frames at a time in the VAE's
    dtype and device; returned as float32."""
    b, f = pixel_values.shape[:2]
    flat = pixel_values.reshape(b * f, *pixel_values.shape[2:])
    p = next(vae.parameters())
    outs = [vae.encode(flat[i:i + chunk].to(p.device, p.dtype)).latent_dist.mode()
            for i in range(0, flat.shape[0], chunk)]
    lat = (torch.cat(outs).float() * float(vae.config.scaling_factor)).contiguous()
    return lat.reshape(b, f, *lat.shape[1:])


def _atomic_write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def cache_latents(dataset: VideoTextDataset, vae, cache_dir: str, progress: bool = True) -> dict:
    """Encode every readable clip of ``dataset`` into ``cache_dir``; returns the meta dict.

    Unreadable or too-short videos are not cached; they are warned about and listed under
    ``meta["skipped"]`` (``{path: reason}``). Already cached clips (an interrupted run) are kept.
    Raises ``RuntimeError`` when no clip could be cached.
    """
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    os.makedirs(cache_dir, exist_ok=True)
    manifest: List[dict] = []
    skipped = {}
    for i in tqdm(range(len(dataset)), desc="caching latents", disable=not progress):
        rec = dataset.records[i]
        name = f"{i:06d}.safetensors"
        fpath = os.path.join(cache_dir, name)
        if not os.path.exists(fpath):
            try:
                pixels = dataset.load_clip(i, sample_rng(dataset.seed, 0, i))
            except (VideoReadError, ClipTooShortError) as exc:
                skipped[rec.path] = str(exc)
                dataset.skip_counter.add(rec.path, str(exc))
                logger.warning("latent cache: skipping %s (%s)", rec.path, exc)
                continue
            lat = encode_pixels(vae, pixels[None])[0].contiguous()
            save_file({"latents": lat}, fpath + ".tmp")
            os.replace(fpath + ".tmp", fpath)
        manifest.append({"index": i, "file": name, "path": rec.path, "captions": list(rec.captions)})
    if not manifest:
        raise RuntimeError(f"cache_latents: none of the {len(dataset)} videos could be read; "
                           f"first failures: {list(skipped.items())[:3]}")
    meta = {"num_frames": dataset.num_frames, "size": dataset.size, "target_fps": dataset.target_fps,
            "stride": dataset.stride, "scaling_factor": float(vae.config.scaling_factor),
            "count": len(manifest), "skipped": skipped,
            "latent_shape": list(load_file(os.path.join(cache_dir, manifest[0]["file"]))["latents"].shape)}
    _atomic_write_text(os.path.join(cache_dir, "manifest.jsonl"), "".join(json.dumps(m) + "\n" for m in manifest))
    _atomic_write_text(os.path.join(cache_dir, "meta.json"), json.dumps(meta, indent=1))
    return meta


class LatentDataset(Dataset):
    """Samples ``{"latents": (F, 4, h, w), "caption", "index", "skipped": []}`` from a cache folder.

    ``num_frames`` / ``size`` (when given) must match the cache, else ``ValueError`` names the
    mismatch. Caption choice and dropout are drawn like :class:`VideoTextDataset` does.
    """

    def __init__(self, cache_dir: str, caption_dropout: float = 0.0, seed: int = 0,
                 num_frames: Optional[int] = None, size: Optional[int] = None) -> None:
        meta_path = os.path.join(cache_dir, "meta.json")
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"latent cache {cache_dir!r} has no meta.json (not a finished cache)")
        with open(meta_path, encoding="utf-8") as fh:
            self.meta = json.load(fh)
        for key, want in (("num_frames", num_frames), ("size", size)):
            if want is not None and self.meta[key] != want:
                raise ValueError(f"latent cache {cache_dir!r} has {key}={self.meta[key]}, the config asks {want}")
        with open(os.path.join(cache_dir, "manifest.jsonl"), encoding="utf-8") as fh:
            self.items = [json.loads(line) for line in fh if line.strip()]
        if not self.items:
            raise ValueError(f"latent cache {cache_dir!r} is empty")
        self.cache_dir, self.caption_dropout, self.seed, self.epoch = cache_dir, caption_dropout, seed, 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        from safetensors.torch import load_file

        item = self.items[index]
        lat = load_file(os.path.join(self.cache_dir, item["file"]))["latents"]
        rng = sample_rng(self.seed, self.epoch, index)
        return {"latents": lat, "caption": choose_caption(item["captions"], rng, self.caption_dropout),
                "index": index, "skipped": []}
