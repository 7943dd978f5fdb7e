"""Atomic, rotating training checkpoints.

Layout under ``<output_dir>/checkpoints``::

    step_00000100/            a complete checkpoint (has meta.json, written last)
        temporal/             the temporal weights (VideoUNet.save_temporal_weights: config + safetensors)
        ema_temporal/         the EMA weights, when EMA is on
        training_state.pt     optimizer, LR scheduler, EMA, step, data position, skip counts, config
        rng_state_rank0.pt    per-rank RNG states (python, numpy, torch CPU, CUDA, noise generator)
        meta.json             {"step", "world_size", "complete": true}
    latest                    the name of the newest complete checkpoint (replaced atomically)
    .tmp_step_00000200/       a checkpoint being written (never read; removed at the next save)

A checkpoint is written entirely into ``.tmp_step_N``, then renamed to ``step_N`` (an atomic
``rename`` on one filesystem) and only then named in ``latest``; old ones beyond ``keep_last`` are
deleted after that. A crash at any point leaves the previous checkpoint as the latest.
The ``.pt`` files are pickles written by this code (numpy RNG states need ``weights_only=False``):
load only checkpoints you wrote.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Callable, List, Optional

import torch

__all__ = ["CheckpointManager", "find_latest_checkpoint", "list_checkpoints", "resolve_resume",
           "load_training_state", "load_rank_state"]

_STEP_RE = re.compile(r"^step_(\d+)$")


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "meta.json"))


def list_checkpoints(root: str) -> List[str]:
    """Complete checkpoint folders under ``root``, oldest first."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = _STEP_RE.match(name)
        if m and _is_complete(os.path.join(root, name)):
            found.append((int(m.group(1)), os.path.join(root, name)))
    return [p for _, p in sorted(found)]


def find_latest_checkpoint(root: str) -> Optional[str]:
    """The checkpoint named in ``root/latest`` if complete, else the highest complete ``step_N``, else None."""
    pointer = os.path.join(root, "latest")
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as fh:
            cand = os.path.join(root, fh.read().strip())
        if _is_complete(cand):
            return cand
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def resolve_resume(resume: Optional[str], root: str) -> Optional[str]:
    """``None`` -> None; ``"latest"`` -> the newest complete checkpoint under ``root`` or None
    (fresh start); a path -> that path, which must be a complete checkpoint (``ValueError`` if not)."""
    if resume is None:
        return None
    if resume == "latest":
        return find_latest_checkpoint(root)
    if not _is_complete(resume):
        raise ValueError(f"resume path {resume!r} is not a complete checkpoint (no meta.json)")
    return resume


def load_training_state(ckpt: str) -> dict:
    """The shared training state (optimizer, scheduler, EMA, step, data position, ...)."""
    return torch.load(os.path.join(ckpt, "training_state.pt"), map_location="cpu", weights_only=False)


def load_rank_state(ckpt: str, rank: int) -> Optional[dict]:
    """This rank's RNG states, or None when the checkpoint was written by fewer processes."""
    path = os.path.join(ckpt, f"rng_state_rank{rank}.pt")
    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


class CheckpointManager:
    """Writes checkpoints atomically and keeps the last ``keep_last``.

    Args:
        root: the checkpoints folder. keep_last: complete checkpoints to keep (>= 1).
        rank, world_size: this process; ``barrier``: a callable synchronising all processes
            (``accelerator.wait_for_everyone``; a no-op for one process).
    """

    def __init__(self, root: str, keep_last: int = 3, rank: int = 0, world_size: int = 1,
                 barrier: Callable[[], None] = lambda: None) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root, self.keep_last, self.rank, self.world_size, self.barrier = root, keep_last, rank, world_size, barrier

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def save(self, step: int, write_shared: Callable[[str], None], rank_state: dict) -> str:
        """Write checkpoint ``step``: ``write_shared(tmp_dir)`` on rank 0 (model weights, training
        state), ``rank_state`` from every rank. Returns the final folder (all ranks)."""
        name = f"step_{step:08d}"
        final = os.path.join(self.root, name)
        tmp = os.path.join(self.root, ".tmp_" + name)
        if self.is_main:
            os.makedirs(self.root, exist_ok=True)
            for stale in os.listdir(self.root):
                if stale.startswith(".tmp_"):
                    shutil.rmtree(os.path.join(self.root, stale), ignore_errors=True)
            os.makedirs(tmp)
        self.barrier()
        torch.save(rank_state, os.path.join(tmp, f"rng_state_rank{self.rank}.pt"))
        self.barrier()
        if self.is_main:
            write_shared(tmp)
            _write_json(os.path.join(tmp, "meta.json"), {"step": step, "world_size": self.world_size, "complete": True})
            if os.path.exists(final):  # a checkpoint of this step from an earlier, abandoned run
                shutil.rmtree(final)
            os.rename(tmp, final)
            tmp_ptr = os.path.join(self.root, "latest.tmp")
            with open(tmp_ptr, "w", encoding="utf-8") as fh:
                fh.write(name)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_ptr, os.path.join(self.root, "latest"))
            for old in list_checkpoints(self.root)[:-self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        return final
