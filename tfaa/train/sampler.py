"""The data order: a resumable, rank-sharded batch sampler.

Epoch ``e``'s order is a permutation drawn from ``torch.Generator().manual_seed(seed + 1_000_003 * e)``
(a pure function of ``(seed, epoch)``), padded by wrapping to a multiple of
``num_replicas * batch_size``; rank ``r`` takes every ``num_replicas``-th index starting at ``r``.
The position in the run is ``(epoch, batches already taken in this epoch)``: a resumed run
restarts the same permutation at the same batch, with no data decoded to skip ahead.
"""
from __future__ import annotations

import math
from typing import Iterator, List

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableBatchSampler"]


class ResumableBatchSampler(Sampler[List[int]]):
    """Batches of ``batch_size`` dataset indices for one rank, from batch ``start_batch`` of ``epoch``."""

    def __init__(self, dataset_len: int, batch_size: int, seed: int = 0, epoch: int = 0, start_batch: int = 0,
                 num_replicas: int = 1, rank: int = 0, shuffle: bool = True) -> None:
        if dataset_len < 1:
            raise ValueError("the dataset is empty")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.n, self.batch_size, self.seed, self.epoch = dataset_len, batch_size, seed, epoch
        self.start_batch, self.num_replicas, self.rank, self.shuffle = start_batch, num_replicas, rank, shuffle

    def batches_per_epoch(self) -> int:
        return math.ceil(self.n / (self.num_replicas * self.batch_size))

    def epoch_indices(self) -> List[int]:
        """This rank's indices of the whole epoch."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.batches_per_epoch() * self.num_replicas * self.batch_size
        order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[List[int]]:
        idx = self.epoch_indices()
        for b in range(self.start_batch, self.batches_per_epoch()):
            yield idx[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch
