"""A shuffling sampler seeded by (seed, epoch): the same order on resume, whatever the number of workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

from vfmkit.data.augment import sample_seed


class EpochSeededSampler(Sampler[int]):
    """Shuffles ``range(num_samples)`` with a permutation that is a pure function of ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at the start of every training epoch (it does so for any sampler with that
    method), so a run resumed at epoch k sees the same order as an uninterrupted run. Pass ``dataset`` to forward
    the epoch to the dataset's own ``set_epoch`` (e.g. a :class:`~vfmkit.tasks.classify.data.ClassificationDataset`,
    whose augmentation is seeded per epoch), so one hook drives both.

    Caveat for resuming with Lightning: on a resumed fit, Lightning creates the first DataLoader iterator before it
    calls ``set_epoch``, and with ``num_workers > 0`` the iterator prefetches at creation; so call
    ``set_epoch(resumed_epoch)`` yourself before ``trainer.fit(..., ckpt_path=...)``. Under DDP, Lightning wraps a
    custom sampler in its ``DistributedSamplerWrapper`` and calls ``set_epoch`` on the wrapper only.

    Args:
        num_samples: N, the dataset length (>= 0).
        seed: the run seed.
        dataset: optional object with ``set_epoch(epoch: int)``, called whenever this sampler's epoch is set.
    """

    def __init__(self, num_samples: int, seed: int = 0, dataset: Any | None = None) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if dataset is not None and not callable(getattr(dataset, "set_epoch", None)):
            raise TypeError(f"dataset {type(dataset).__name__} has no set_epoch(epoch) method")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.dataset = dataset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (0-based) for the next iteration; forwards it to ``dataset``."""
        self.epoch = int(epoch)
        if self.dataset is not None:
            self.dataset.set_epoch(self.epoch)

    def permutation(self, epoch: int | None = None) -> torch.Tensor:
        """The int64 (N,) permutation of ``range(N)`` for ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else int(epoch)
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0, stream="sampler"))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())

    def __len__(self) -> int:
        return self.num_samples
