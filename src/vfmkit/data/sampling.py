"""Serving samples: the image and cached-feature datasets and a shuffling sampler seeded by (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from vfmkit.data.augment import EpochSeededDataset, TrainAugment, sample_seed
from vfmkit.data.images import load_image_rgb
from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.spec.classify import AugmentSpec

if TYPE_CHECKING:
    from vfmkit.data.classification import ClassificationSplit


class EpochSeededSampler(Sampler[int]):
    """Shuffles ``range(num_samples)`` with a permutation that is a pure function of ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at the start of every training epoch (it does so for any sampler with that
    method), so a run resumed at epoch k sees the same order as an uninterrupted run. Pass ``dataset`` to forward
    the epoch to the dataset's own ``set_epoch`` (e.g. a :class:`~vfmkit.data.classification.ClassificationDataset`,
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


class ClassificationDataset(EpochSeededDataset):
    """Decoded, resized (and in training, augmented) images of a split.

    Evaluation items are exactly ``preprocess_images([path], ..., resolution=R)[0]`` (bilinear antialiased resize
    to R x R), so training-time validation, feature caching, ONNX verification and ``predict`` agree. Training items
    go through :class:`~vfmkit.data.augment.TrainAugment` seeded by ``(seed, epoch, index)``: reproducible whatever
    the number of workers. The epoch lives in shared memory, so :meth:`set_epoch` reaches persistent workers.

    Args:
        split: the split to serve.
        resolution: output side R in pixels.
        train: apply the random augmentation.
        augment: the augmentation spec (default ``AugmentSpec()``); ignored when ``train`` is false.
        seed: the run seed.
    """

    def __init__(
        self,
        split: ClassificationSplit,
        resolution: int,
        train: bool = False,
        augment: AugmentSpec | None = None,
        seed: int = 0,
    ) -> None:
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.split = split
        self.resolution = int(resolution)
        self.train = bool(train)
        self.seed = int(seed)
        self.augment = TrainAugment(self.resolution, augment or AugmentSpec()) if self.train else None
        super().__init__()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Returns ``(image float32 (3, R, R) in [0, 1], label int64 scalar tensor, index)``.

        Raises:
            DataError: the image cannot be decoded (the message names the file).
        """
        index = int(index)
        image = pil_to_tensor(load_image_rgb(self.split.files[index]))
        if self.augment is None:
            image = resize(image, (self.resolution, self.resolution))
        else:
            image = self.augment(image, sample_seed(self.seed, self.epoch, index))
        return image, torch.tensor(self.split.labels[index], dtype=torch.int64), index


class FeatureDataset(Dataset):
    """Cached backbone features with their labels.

    Args:
        features: float (N, C) tensor.
        labels: int (N,) array of class indices.
    """

    def __init__(self, features: torch.Tensor, labels: np.ndarray) -> None:
        if features.ndim != 2:
            raise ValueError(f"features must be (N, C), got shape {tuple(features.shape)}")
        labels = np.asarray(labels)
        if labels.shape != (features.shape[0],):
            raise ValueError(f"labels must have shape ({features.shape[0]},), got {labels.shape}")
        self.features = features
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Returns ``(feature (C,), label int64 scalar tensor, index)``."""
        index = int(index)
        return self.features[index], self.labels[index], index
