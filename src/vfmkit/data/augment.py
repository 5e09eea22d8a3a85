"""Deterministic training augmentation and per-epoch seeding.

Every random choice of a training sample (crop box, flip, colour jitter) is drawn from a torch RNG seeded by
:func:`sample_seed` of ``(seed, epoch, index)``, so a sample's augmentation depends only on those three numbers:
not on the number of DataLoader workers, on which worker gets which sample, or on the order samples are fetched.
Together with :class:`~vfmkit.data.sampling.EpochSeededSampler` this makes a resumed run see exactly the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sized
from typing import Protocol

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vfmkit.data.preprocess import resize

_SEED_MASK = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, index: int, stream: str = "augment") -> int:
    """A 63-bit seed that depends only on its arguments (stable across processes and Python versions).

    Args:
        seed: the run seed (any int, negative allowed).
        epoch: the epoch (0-based).
        index: the sample index (or any other int key).
        stream: a name separating independent random streams (``"augment"``, ``"sampler"``...).

    Returns:
        An int in [0, 2**63).
    """
    key = f"{stream}:{seed}:{epoch}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & _SEED_MASK


class AugmentOptions(Protocol):
    """What :class:`TrainAugment` reads (the classification spec's ``dataset.augment`` section has these fields)."""

    random_resized_crop: tuple[float, float] | None
    hflip: float
    color_jitter: float


class TrainAugment:
    """Random resized crop, horizontal flip and colour jitter of one float image, reproducible from a seed.

    Args:
        resolution: output side R in pixels.
        augment: the options (e.g. the ``dataset.augment`` spec section): ``random_resized_crop`` area-scale
            range (``None``: plain resize, identical to evaluation resizing), ``hflip`` probability, ``color_jitter``
            strength (brightness, contrast and saturation factors drawn from [1 - s, 1 + s]; 0 disables it).
    """

    def __init__(self, resolution: int, augment: AugmentOptions) -> None:
        self.resolution = int(resolution)
        steps: list[torch.nn.Module] = []
        if augment.random_resized_crop is not None:
            scale = tuple(float(s) for s in augment.random_resized_crop)
            steps.append(v2.RandomResizedCrop(self.resolution, scale=scale, antialias=True))
        if augment.hflip > 0:
            steps.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.color_jitter > 0:
            strength = augment.color_jitter
            steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
        self._crop = augment.random_resized_crop is not None
        self._transform = v2.Compose(steps) if steps else None

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """Augment one image.

        Args:
            image: float32 (3, H, W) RGB in [0, 1].
            seed: the sample seed (see :func:`sample_seed`); the same seed gives the same output.

        Returns:
            float32 (3, R, R) in [0, 1]. The global torch RNG state is left as it was.
        """
        if not self._crop:
            image = resize(image, (self.resolution, self.resolution))
        if self._transform is None:
            return image
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self._transform(image)
        return out.clamp_(0.0, 1.0).contiguous()


class EpochSeededDataset(Dataset):
    """Base of the datasets whose training augmentation is seeded by ``(seed, epoch, index)``.

    The epoch lives in a shared-memory tensor, so :meth:`set_epoch` (called by
    :class:`~vfmkit.data.sampling.EpochSeededSampler`) also reaches persistent DataLoader workers. Subclasses call
    ``super().__init__()`` and keep their samples in ``self.split``.
    """

    split: Sized

    def __init__(self) -> None:
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch whose augmentation is served."""
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Serve the augmentation of ``epoch`` (0-based) from now on, in this process and in every worker."""
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self.split)
