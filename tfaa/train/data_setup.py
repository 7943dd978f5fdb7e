"""From ``DataConfig`` to a dataset, and the resumable stream of batches the trainer consumes."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List

from torch.utils.data import DataLoader

from tfaa.data import (VideoRecord, VideoTextDataset, collate_video_text, make_synthetic_dataset, msrvtt_records,
                       read_caption_file, ucf101_records)

from .config import DataConfig
from .sampler import ResumableBatchSampler

__all__ = ["load_records", "build_video_dataset", "DataPosition", "batch_stream"]


def load_records(cfg: DataConfig, output_dir: str, is_main: bool = True) -> List[VideoRecord]:
    """The records ``cfg`` names (``format`` captions / ucf101 / msrvtt / synthetic). The synthetic
    set (``2 * num_frames`` frames per video at 24 fps, frame folders) is generated into ``output_dir/synthetic_data`` (by the main process; others must wait
    before calling with ``is_main=False``). Raises ``ValueError`` when the source lists no video."""
    if cfg.format == "captions":
        records = read_caption_file(cfg.captions, root=cfg.root)
    elif cfg.format == "ucf101":
        records = ucf101_records(cfg.ucf101_root, cfg.ucf101_split_file)
    elif cfg.format == "msrvtt":
        records = msrvtt_records(cfg.msrvtt_annotation, cfg.msrvtt_video_dir, cfg.msrvtt_split)
    elif cfg.format == "synthetic":
        out = os.path.join(output_dir, "synthetic_data")
        cap = os.path.join(out, "captions.jsonl")
        if is_main and not os.path.isfile(cap):
            # twice the clip length at 24 fps, so random_start and stride have room
            make_synthetic_dataset(out, num_videos=cfg.synthetic_num_videos, num_frames=2 * cfg.num_frames,
                                   size=cfg.size, fps=24.0, seed=0, format="frames")
        records = read_caption_file(cap)
    else:
        raise ValueError(f"data.format must be captions, ucf101, msrvtt or synthetic, got {cfg.format!r}")
    if not records:
        raise ValueError(f"the dataset is empty: data.format={cfg.format!r} lists no videos")
    return records


def build_video_dataset(cfg: DataConfig, records: List[VideoRecord], seed: int) -> VideoTextDataset:
    """A :class:`VideoTextDataset` with ``cfg``'s sampling and transform settings."""
    return VideoTextDataset(records, num_frames=cfg.num_frames, target_fps=cfg.target_fps, size=cfg.size,
                            stride=cfg.stride, random_start=cfg.random_start, caption_dropout=cfg.caption_dropout,
                            seed=seed, frames_fps=cfg.frames_fps)


@dataclass
class DataPosition:
    """Where the run is in the data: the epoch and the number of this epoch's batches consumed."""

    epoch: int = 0
    batch: int = 0


def batch_stream(dataset, position: DataPosition, batch_size: int, seed: int, num_replicas: int, rank: int,
                 num_workers: int = 0) -> Iterator[dict]:
    """Endless batches from ``position`` on, updating ``position`` as each batch is handed out."""
    while True:
        dataset.set_epoch(position.epoch)
        sampler = ResumableBatchSampler(len(dataset), batch_size, seed=seed, epoch=position.epoch,
                                        start_batch=position.batch, num_replicas=num_replicas, rank=rank)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_video_text, num_workers=num_workers)
        for batch in loader:
            position.batch += 1
            yield batch
        position.epoch += 1
        position.batch = 0
