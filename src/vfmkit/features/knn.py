"""k-NN classification over class folders: a quick, training-free probe of embedding quality.

As in the DINO / RADIO evaluations (dinov2 ``eval/knn.py``): summary embeddings are L2-normalised; each validation
image takes its k most cosine-similar training images; each neighbour votes for its class with weight
``exp(similarity / T)``; classes are ranked by their summed votes. Defaults k = 20, T = 0.07.

Folder layout: ``root/<class name>/**/<image>``, one sub-folder per class (sorted by name gives the class index).
Every validation class must also exist under the training root, and the training root needs at least two classes
(with one, every query is "right").

Similarities are computed in float64: the summaries of a random or partly collapsed model can be nearly collinear,
with cosine similarities that differ by less than float32 resolves (~1e-7), so float32 picks neighbours by rounding
noise. When many queries cannot tell their k-th from their (k+1)-th neighbour even in float64 (closer than
:data:`TIE_TOLERANCE`), a warning says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from vfmkit.data.images import list_image_files, list_subfolders
from vfmkit.errors import DataError, VfmError
from vfmkit.features.embed import SkippedImage, extract_embeddings, resolve_model
from vfmkit.features.runners import RuntimeOptions, make_runner
from vfmkit.models.backbones.base import Backbone

logger = logging.getLogger(__name__)

TIE_TOLERANCE = 1e-6
"""Cosine similarities closer than this count as tied: float32 (about 7 significant digits) cannot order them, and a
neighbour set decided by such differences reflects rounding, not the embedding."""

TIE_WARNING_FRACTION = 0.1
"""Warn when more than this fraction of queries have a tied k-th / (k+1)-th neighbour."""


@dataclass
class ClassFolders:
    """Images of a class-folder dataset: ``files[i]`` belongs to ``classes[labels[i]]``."""

    classes: list[str]
    files: list[Path]
    labels: list[int]


@dataclass
class ClassCount:
    """Per-class validation counts: images, and how many the top-1 prediction got right."""

    total: int = 0
    correct: int = 0


@dataclass
class KnnResult:
    """k-NN accuracy on the validation images (percent), per-class counts, and what was skipped."""

    top1: float
    top5: float
    k: int
    temperature: float
    classes: list[str]
    num_train: int
    num_val: int
    per_class: dict[str, ClassCount] = field(default_factory=dict)
    skipped: list[SkippedImage] = field(default_factory=list)


def list_class_folders(root: str | Path, classes: Sequence[str] | None = None) -> ClassFolders:
    """List ``root/<class>/**/<image>``.

    Args:
        root: the dataset folder.
        classes: the class list to index labels by (e.g. the training classes for a validation root); None: the
            sorted sub-folder names of ``root``.

    Raises:
        DataError: ``root`` is not a folder, has no class folders, a class folder holds no images, or a class is not
            in ``classes``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"class-folder dataset {root} is not a folder (expected {root}/<class name>/<image files>)")
    folders = list_subfolders(root)
    if not folders:
        raise DataError(f"no class folders in {root} (expected {root}/<class name>/<image files>)")
    names = [p.name for p in folders] if classes is None else list(classes)
    files, labels = [], []
    for folder in folders:
        if folder.name not in names:
            raise DataError(f"class folder {folder} has no counterpart among the training classes ({', '.join(names)})")
        try:
            images = list_image_files(folder)
        except DataError as exc:
            raise DataError(f"class folder {folder} holds no images") from exc
        files.extend(images)
        labels.extend([names.index(folder.name)] * len(images))
    return ClassFolders(names, files, labels)


def require_two_classes(folders: ClassFolders, root: str | Path) -> None:
    """Refuse a k-NN memory with fewer than two classes (every query would be counted right).

    Raises:
        DataError: naming ``root`` and its one class.
    """
    if len(folders.classes) < 2:
        raise DataError(
            f"k-NN needs at least 2 classes, {root} has 1 ({', '.join(folders.classes)}): every query would be "
            "counted right; add a folder per class"
        )


def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Temperature-weighted k-NN class votes, in float64 (see the module docstring); logs a warning when more than
    :data:`TIE_WARNING_FRACTION` of the queries have their k-th and (k+1)-th neighbours within
    :data:`TIE_TOLERANCE`.

    Args:
        train_features: (N, C) embeddings (normalised here).
        train_labels: (N,) int64 class indices in [0, num_classes).
        query_features: (M, C) embeddings (normalised here).
        num_classes: number of classes.
        k: neighbours per query (capped at N).
        temperature: T in ``exp(cosine similarity / T)``.
        chunk_size: queries per similarity block (bounds memory to chunk_size x N).

    Returns:
        float64 (M, num_classes) summed votes; higher is more likely.
    """
    if k < 1 or temperature <= 0:
        raise VfmError(f"k-NN needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    train = F.normalize(train_features.double(), dim=1)
    query = F.normalize(query_features.double(), dim=1)
    k = min(k, train.shape[0])
    scores, tied = [], 0
    for start in range(0, query.shape[0], chunk_size):
        similarity = query[start : start + chunk_size] @ train.T
        top_sim, top_index = similarity.topk(min(k + 1, train.shape[0]), dim=1)
        if top_sim.shape[1] > k:
            tied += int((top_sim[:, k - 1] - top_sim[:, k] < TIE_TOLERANCE).sum())
        top_sim, top_index = top_sim[:, :k], top_index[:, :k]
        votes = torch.zeros(top_sim.shape[0], num_classes, dtype=torch.float64)
        votes.scatter_add_(1, train_labels[top_index], (top_sim / temperature).exp())
        scores.append(votes)
    if query.shape[0] and tied > TIE_WARNING_FRACTION * query.shape[0]:
        logger.warning(
            "k-NN: %d of %d queries have neighbours k and k + 1 (k = %d) within %g cosine similarity: the embeddings "
            "are nearly collinear (a random or collapsed model?), so which neighbours vote rests on tiny differences "
            "(computed in float64)",
            tied,
            query.shape[0],
            k,
            TIE_TOLERANCE,
        )
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, dtype=torch.float64)


def knn_accuracy(scores: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> tuple[float, float, dict]:
    """Top-1 / top-5 accuracy (percent) and per-class :class:`ClassCount` from (M, K) scores and (M,) labels."""
    ranked = scores.argsort(dim=1, descending=True)
    hits = ranked == labels[:, None]
    top1 = hits[:, :1].any(dim=1)
    top5 = hits[:, : min(5, scores.shape[1])].any(dim=1)
    per_class = {name: ClassCount() for name in classes}
    for label, correct in zip(labels.tolist(), top1.tolist(), strict=True):
        per_class[classes[label]].total += 1
        per_class[classes[label]].correct += int(correct)
    per_class = {name: count for name, count in per_class.items() if count.total}
    return 100.0 * top1.float().mean().item(), 100.0 * top5.float().mean().item(), per_class


def knn_evaluate(
    train_dir: str | Path,
    val_dir: str | Path,
    model: str | Path | Backbone,
    k: int = 20,
    temperature: float = 0.07,
    resolution: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    runtime: RuntimeOptions | None = None,
) -> KnnResult:
    """Embed two class-folder datasets and classify the validation images by k-NN over the training images.

    Args:
        train_dir: ``train_dir/<class>/<images>``.
        val_dir: ``val_dir/<class>/<images>``; every class must exist in ``train_dir``.
        model: a registry id, ``hf-hub:`` source or checkpoint path, or a loaded backbone.
        k: neighbours per validation image.
        temperature: vote temperature T.
        resolution: None for the model's preferred resolution, N for N x N.
        batch_size: images per forward.
        progress: show progress on stderr.
        runtime: how to run the model (see :class:`RuntimeOptions`); None: eager PyTorch.

    Returns:
        A :class:`KnnResult`; unreadable images are left out of both sets and listed in ``skipped``.

    Raises:
        DataError: a missing or empty folder, a validation class that is not a training class, or fewer than two
            training classes.
    """
    train = list_class_folders(train_dir)
    require_two_classes(train, train_dir)
    val = list_class_folders(val_dir, classes=train.classes)
    backbone, model_id = resolve_model(model)
    runner = make_runner(backbone, model_id, runtime)
    features, labels, skipped = {}, {}, []
    for name, folders in (("train", train), ("val", val)):
        embeddings = extract_embeddings(
            runner, folders.files, resolution, batch_size, "summary", progress=progress, desc=f"knn {name}"
        )
        position = {path: i for i, path in enumerate(folders.files)}
        features[name] = embeddings.tensors["summary"]
        labels[name] = torch.tensor([folders.labels[position[path]] for path in embeddings.files], dtype=torch.long)
        skipped.extend(embeddings.skipped)
    scores = knn_scores(features["train"], labels["train"], features["val"], len(train.classes), k, temperature)
    top1, top5, per_class = knn_accuracy(scores, labels["val"], train.classes)
    return KnnResult(
        top1=top1,
        top5=top5,
        k=min(k, len(labels["train"])),
        temperature=temperature,
        classes=train.classes,
        num_train=len(labels["train"]),
        num_val=len(labels["val"]),
        per_class=per_class,
        skipped=skipped,
    )
