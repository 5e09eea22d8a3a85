"""Encoding pair sets: image and caption embeddings, retrieval evaluation, and the frozen-vision feature cache.

A frozen image backbone does not change during training, so its image features are computed once with the
classification feature cache (:func:`vfmkit.tasks.classify.features.cached_summaries`, keyed by the backbone's
weights, preprocessing, resolution and every file's identity) and training runs the text tower (and an added image
projection) only (:class:`CachedPairDataset`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vfmkit.models.backbones.base import Backbone, BackboneOutput, Preprocessing
from vfmkit.models.clip import ClipModel, ImageTower, tower_features
from vfmkit.tasks.classify.data import ClassificationSplit
from vfmkit.tasks.clip.data import CaptionPairs, PairDataset, pick_caption
from vfmkit.tasks.clip.metrics import DEFAULT_KS, retrieval_metrics
from vfmkit.utils.tensor_cache import CacheStats

CacheFunction = Callable[..., tuple[torch.Tensor, bool]]
"""``cached_summaries(backbone, split, resolution, cache_dir, batch_size=, num_workers=, stats=) -> (summaries,
hit)``."""


@torch.no_grad()
def encode_captions(model: ClipModel, captions: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """float32 (N_txt, D) L2-normalised caption embeddings, on the CPU."""
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(captions), batch_size):
        ids = model.tokenize(list(captions[start : start + batch_size])).to(device)
        rows.append(model.encode_text(ids).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, model.embed_dim)


@torch.no_grad()
def encode_pair_images(
    model: ClipModel, pairs: CaptionPairs, resolution: int, batch_size: int = 64, num_workers: int = 0
) -> torch.Tensor:
    """float32 (N_img, D) L2-normalised image embeddings of a pair set (evaluation resize to R x R), on the CPU."""
    device = next(model.parameters()).device
    loader = DataLoader(PairDataset(pairs, resolution), batch_size=batch_size, num_workers=num_workers)
    rows = [model.encode_image(images.to(device)).float().cpu() for images, _, _ in loader]
    return torch.cat(rows) if rows else torch.zeros(0, model.embed_dim)


def evaluate_retrieval(
    model: ClipModel,
    pairs: CaptionPairs,
    resolution: int,
    batch_size: int = 64,
    ks: Sequence[int] = DEFAULT_KS,
    image_embeddings: torch.Tensor | None = None,
) -> dict[str, float]:
    """Bidirectional retrieval metrics of a pair set (see :func:`~vfmkit.tasks.clip.metrics.retrieval_metrics`).

    Identical caption texts are merged into one query/item relevant to every image they describe: a model cannot
    tell them apart, so keeping them separate would only create ties.

    Args:
        image_embeddings: precomputed normalised (N_img, D) embeddings (e.g. from the frozen-vision cache).
    """
    model.eval()
    images = (
        image_embeddings if image_embeddings is not None else encode_pair_images(model, pairs, resolution, batch_size)
    )
    texts, relevance = unique_captions(pairs)
    return retrieval_metrics(images @ encode_captions(model, texts).T, relevance, ks)


def unique_captions(pairs: CaptionPairs) -> tuple[list[str], np.ndarray]:
    """The distinct caption texts (first-appearance order) and bool (N_img, N_unique) relevance."""
    index: dict[str, int] = {}
    for text in pairs.captions:
        index.setdefault(text, len(index))
    relevance = np.zeros((len(pairs.images), len(index)), dtype=bool)
    for text, image in zip(pairs.captions, pairs.caption_image.tolist(), strict=True):
        relevance[image, index[text]] = True
    return list(index), relevance


class ImageTowerBackbone(Backbone):
    """The feature part of an image tower seen as a backbone whose ``summary`` is the image feature (before an added
    projection), so the classification feature cache and ``vfm embed``'s extraction can run it. Its weights (and so
    the cache key) are the tower's backbone, adaptor heads included."""

    def __init__(self, tower: ImageTower) -> None:
        super().__init__()
        self.backbone = tower.backbone
        self.adaptor_name = tower.adaptor_name
        self.embed_dim = self.summary_dim = tower.feature_dim
        self.num_blocks = tower.backbone.num_blocks

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        summary = tower_features(self.backbone, self.adaptor_name, images)
        return BackboneOutput(summary=summary, features=summary.new_zeros(len(summary), 0, self.embed_dim), grid=(0, 0))


def cached_image_features(
    model: ClipModel,
    pairs: CaptionPairs,
    resolution: int,
    cache_dir: Path | None,
    cache_fn: CacheFunction | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    stats: CacheStats | None = None,
) -> tuple[torch.Tensor, bool]:
    """(N_img, feature_dim) float32 image features of the pair images (``model.visual.features``, before the
    projection; not normalised) from the feature cache, computed and stored on a miss.

    Images inside WebDataset shards have no file identity to key the cache with: they are computed in memory
    (``cache_dir`` None does the same for files).

    Args:
        model: the CLIP model whose (frozen) image backbone is encoded.
        pairs: the pairs.
        resolution: evaluation resize side.
        cache_dir: the cache folder (None: no cache).
        cache_fn: the cache function; default :func:`vfmkit.tasks.classify.features.cached_summaries`.
        stats: counts the cache's hits, misses and damaged (rebuilt) entries.

    Returns:
        The features and whether they came from the cache.
    """
    if cache_fn is None:
        from vfmkit.tasks.classify.features import cached_summaries as cache_fn
    backbone = ImageTowerBackbone(model.visual)
    if cache_dir is None or any(image.member is not None for image in pairs.images):
        return _features_in_memory(backbone, pairs, resolution, batch_size, num_workers), False
    split = ClassificationSplit(
        name="clip-images",
        files=[image.path for image in pairs.images],
        labels=np.zeros(len(pairs.images), dtype=np.int64),
        classes=["image"],
    )
    features, hit = cache_fn(
        backbone, split, resolution, Path(cache_dir), batch_size=batch_size, num_workers=num_workers, stats=stats
    )
    return features.float(), hit


@torch.no_grad()
def _features_in_memory(
    backbone: ImageTowerBackbone, pairs: CaptionPairs, resolution: int, batch_size: int, num_workers: int
) -> torch.Tensor:
    device = next(backbone.parameters()).device
    backbone.eval()
    loader = DataLoader(PairDataset(pairs, resolution), batch_size=batch_size, num_workers=num_workers)
    rows = [backbone(images.to(device)).summary.float().cpu() for images, _, _ in loader]
    return torch.cat(rows) if rows else torch.zeros(0, backbone.summary_dim)


class CachedPairDataset(Dataset):
    """Items from cached image features: ``(feature (C,), caption index, image index)``, the caption drawn per
    (seed, epoch, image) as :class:`~vfmkit.tasks.clip.data.PairDataset` does in training (``train``), else the
    image's first caption."""

    def __init__(self, features: torch.Tensor, pairs: CaptionPairs, seed: int = 0, train: bool = True) -> None:
        if features.shape[0] != len(pairs.images):
            raise ValueError(f"{features.shape[0]} features for {len(pairs.images)} images")
        self.features = features
        self.pairs = pairs
        self.owners = pairs.captions_of()
        self.seed = int(seed)
        self.train = bool(train)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.owners)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        index = int(index)
        caption = pick_caption(self.owners[index], self.seed, self.epoch, index, self.train)
        return self.features[index], caption, index
