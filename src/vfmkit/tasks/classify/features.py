"""Backbone features computed once and cached, so linear-probe epochs run no backbone forward.

``weights_fingerprint`` is re-exported from :mod:`vfmkit.weights.fingerprint` for callers of this module.

The cache key covers the backbone weights (a hash of every tensor), the resolution, the model's preprocessing and
the identity of each file (path, size, modification time), and the runner's ``cache_tag`` when a runner (e.g.
onnxruntime int8, :mod:`vfmkit.features.runners`) computes the summaries; any change gives a new cache file.
Entries are :mod:`vfmkit.utils.tensor_cache` entries: one that does not verify (truncated, other shape or dtype,
content hash mismatch, other key) is recomputed and rewritten, and counted in the caller's
:class:`~vfmkit.utils.tensor_cache.CacheStats`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vfmkit.models.backbones.base import Backbone, BackboneOutput
from vfmkit.tasks.classify.data import ClassificationDataset, ClassificationSplit
from vfmkit.utils.tensor_cache import CacheStats, read_entry, write_entry
from vfmkit.weights.fingerprint import weights_fingerprint

__all__ = ["cache_key", "cached_summaries", "extract_summaries", "weights_fingerprint"]

logger = logging.getLogger(__name__)


def cache_key(backbone: Backbone, weights: str, split: ClassificationSplit, resolution: int) -> str:
    """Hex key of (weights, preprocessing, resolution, files and their labels)."""
    files = []
    for path, label in zip(split.files, split.labels.tolist(), strict=True):
        stat = Path(path).stat()
        files.append((str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, label))
    payload = {
        "weights": weights,
        "preprocessing": repr(backbone.preprocessing),
        "resolution": resolution,
        "files": files,
    }
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


@torch.inference_mode()
def extract_summaries(
    backbone: Backbone,
    split: ClassificationSplit,
    resolution: int,
    batch_size: int,
    num_workers: int,
    runner: Callable[[torch.Tensor], BackboneOutput] | None = None,
) -> torch.Tensor:
    """(N, C) float32 backbone summaries of the split's images (eval preprocessing), in file order; computed by
    ``runner`` (images (B, 3, H, W) in [0, 1] -> BackboneOutput, e.g. an onnxruntime runner) when given."""
    dataset = ClassificationDataset(split, resolution, train=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = next(backbone.parameters()).device
    backbone.eval()
    forward = runner if runner is not None else backbone
    rows = []
    for images, _, _ in loader:
        rows.append(forward(images.to(device)).summary.float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, backbone.summary_dim)


def cached_summaries(
    backbone: Backbone,
    split: ClassificationSplit,
    resolution: int,
    cache_dir: Path,
    batch_size: int = 32,
    num_workers: int = 0,
    weights: str | None = None,
    runner: Callable[[torch.Tensor], BackboneOutput] | None = None,
    stats: CacheStats | None = None,
) -> tuple[torch.Tensor, bool]:
    """The split's summaries from the cache, computing and storing them on a miss (with ``runner`` when given: its
    ``cache_tag`` attribute, e.g. ``onnxruntime-int8-opset17``, becomes part of the cache key). An entry that does
    not verify (:func:`vfmkit.utils.tensor_cache.read_entry`) is a miss: recomputed, rewritten, and counted as
    damaged in ``stats``.

    Returns:
        (N, C) float32 summaries and whether they came from the cache.

    Raises:
        OSError: the entry cannot be written (the error names its path).
    """
    weights = weights or weights_fingerprint(backbone)
    key = cache_key(backbone, weights, split, resolution)
    if runner is not None:
        key = hashlib.sha256(f"{key}:{getattr(runner, 'cache_tag', type(runner).__name__)}".encode()).hexdigest()
    path = Path(cache_dir) / f"{split.name}-{key[:24]}.safetensors"
    layout = {"summary": (torch.float32, (len(split), backbone.summary_dim))}
    facts = {"key": key, "split": split.name}
    lookup = read_entry(path, layout, facts)
    if stats is not None:
        stats.record(lookup, path)
    if lookup.hit:
        logger.info("feature cache hit: %s", path)
        return lookup.tensors["summary"], True
    if lookup.damaged:
        logger.info("feature cache: rebuilding %s (%s)", path, lookup.problem)
    summaries = extract_summaries(backbone, split, resolution, batch_size, num_workers, runner).float()
    write_entry(path, {"summary": summaries}, facts)
    return summaries, False
