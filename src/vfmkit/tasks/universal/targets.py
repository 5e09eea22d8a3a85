"""Per-task training targets (OneFormer's unified dataset mapper), contrastive texts, semantic ground truth and the
task sampling.

From one panoptic annotation (segment-id map + segments), ``semantic`` targets are one mask per class present (the
union of its non-crowd segments), ``instance`` targets the non-crowd things, ``panoptic`` targets every non-crowd
segment. Crowd regions are never targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from vfmkit.models.heads.mask2former.oneformer import TASKS
from vfmkit.tasks.universal.categories import IGNORE, SegmentInfo


def task_targets(
    ids: torch.Tensor, segments: Sequence[SegmentInfo], isthing: Sequence[bool], task: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets of one sample for ``task`` (OneFormer's mapper; crowd segments are never targets).

    Args:
        ids: int64 (H, W) segment ids after augmentation.
        segments: the sample's segments (contiguous categories).
        isthing: per category, True for things.
        task: ``semantic`` (one mask per class present), ``instance`` (things) or ``panoptic`` (every segment).

    Returns:
        ``(labels int64 (T,), masks bool (T, H, W))``; segments cropped away entirely are dropped.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    labels: list[int] = []
    masks: list[torch.Tensor] = []
    for segment in segments:
        if segment.iscrowd or (task == "instance" and not isthing[segment.category]):
            continue
        mask = ids == segment.id
        if not bool(mask.any()):
            continue
        if task == "semantic" and segment.category in labels:
            position = labels.index(segment.category)
            masks[position] = masks[position] | mask
            continue
        labels.append(segment.category)
        masks.append(mask)
    if not labels:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, *ids.shape, dtype=torch.bool)
    return torch.tensor(labels, dtype=torch.int64), torch.stack(masks)


def target_texts(labels: Sequence[int], names: Sequence[str], task: str, num_texts: int) -> list[str]:
    """The contrastive texts of one sample: "a photo with a {class}" per target, in class order, padded with
    "a {task} photo" ("an instance photo") to ``num_texts`` (extra targets beyond it are dropped)."""
    pad = "an instance photo" if task == "instance" else f"a {task} photo"
    texts = [f"a photo with a {names[k]}" for k in sorted(int(label) for label in labels)][:num_texts]
    return texts + [pad] * (num_texts - len(texts))


def semantic_map(ids: np.ndarray, segments: Sequence[SegmentInfo]) -> np.ndarray:
    """int64 (H, W) category per pixel (crowd regions included: they are of their category), ``IGNORE`` on VOID
    and on ids without a segment."""
    out = np.full(ids.shape, IGNORE, dtype=np.int64)
    for segment in segments:
        out[ids == segment.id] = segment.category
    return out


def resolve_task_prob(task_prob: Mapping[str, float]) -> tuple[float, float]:
    """Plain probabilities {semantic, instance, panoptic} (sum 1) -> OneFormer's cumulative thresholds
    (semantic below the first, instance below the second, panoptic above)."""
    unknown = set(task_prob) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)} in task_prob")
    probs = [float(task_prob.get(task, 0.0)) for task in TASKS]
    if min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"task probabilities must be >= 0 and add up to 1, got {dict(zip(TASKS, probs, strict=True))}")
    return probs[0], probs[0] + probs[1]


def draw_task(thresholds: tuple[float, float], seed: int) -> str:
    """The task of a training sample, from its own random stream (depends only on ``seed``)."""
    u = float(torch.rand((), generator=torch.Generator().manual_seed(seed)))
    return "semantic" if u < thresholds[0] else "instance" if u < thresholds[1] else "panoptic"
