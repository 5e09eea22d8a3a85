"""Inference post-processing of mask-classification outputs (Mask2Former's ``maskformer_model.py``) for the three
tasks.

Inputs are a model's ``pred_logits`` (Q, K + 1) (the last class = no object) and ``pred_masks`` (Q, h, w) mask
logits of ONE image; resize the masks to the output size first (:func:`resize_mask_logits`, bilinear, like the
reference's ``sem_seg_postprocess``).

- semantic: per-pixel class scores ``Σ_q softmax(cls_q)[:K] * sigmoid(mask_q)`` (batched and traceable: it can be
  part of an exported graph);
- panoptic: queries whose best class is not "no object" and scores above ``object_mask_threshold`` compete per pixel
  by ``score * mask probability``; a query keeps the pixels it wins where its own mask is >= 0.5, and is dropped when
  they are less than ``overlap_threshold`` of its mask; stuff segments of one class are merged;
- instance: the ``test_topk_per_image`` best (query, class) pairs over Q x K, masks = logit > 0, score = class
  probability x mean mask probability inside the mask; only thing classes when ``isthing`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def resize_mask_logits(pred_masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of (..., Q, h, w) mask logits to ``size`` (H, W)."""
    if tuple(pred_masks.shape[-2:]) == tuple(size):
        return pred_masks
    squeeze = pred_masks.ndim == 3
    masks = pred_masks[None] if squeeze else pred_masks
    masks = F.interpolate(masks, size=tuple(size), mode="bilinear", align_corners=False)
    return masks[0] if squeeze else masks


def semantic_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """Class scores per pixel: (B, Q, K + 1), (B, Q, H, W) -> float (B, K, H, W) in [0, Q] (argmax = the class).
    Also accepts one image: (Q, K + 1), (Q, H, W) -> (K, H, W)."""
    probs = pred_logits.softmax(-1)[..., :-1]
    return torch.einsum("...qc,...qhw->...chw", probs, pred_masks.sigmoid())


@dataclass
class PanopticResult:
    """A panoptic prediction of one image.

    Attributes:
        ids: int32 (H, W) segment ids, 0 = no segment.
        segments: per segment ``{"id", "category" (contiguous index), "isthing", "score"}``.
    """

    ids: torch.Tensor
    segments: list[dict]


def panoptic_inference(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    isthing: Sequence[bool],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> PanopticResult:
    """Mask2Former's panoptic inference for one image.

    Args:
        pred_logits: (Q, K + 1) class logits.
        pred_masks: (Q, H, W) mask logits at the output size.
        isthing: per class index, True for things (stuff of one class is merged into one segment).
        object_mask_threshold: minimum class probability of a kept query.
        overlap_threshold: minimum share of a query's mask (prob >= 0.5) it must win to become a segment.

    Returns:
        The :class:`PanopticResult`.
    """
    num_classes = pred_logits.shape[-1] - 1
    if len(isthing) != num_classes:
        raise ValueError(f"isthing has {len(isthing)} entries for {num_classes} classes")
    scores, labels = pred_logits.float().softmax(-1).max(-1)
    probs = pred_masks.float().sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    scores, labels, probs = scores[keep], labels[keep], probs[keep]
    height, width = pred_masks.shape[-2:]
    ids = torch.zeros((height, width), dtype=torch.int32, device=pred_masks.device)
    segments: list[dict] = []
    if probs.shape[0] == 0:
        return PanopticResult(ids, segments)
    winner = (scores.view(-1, 1, 1) * probs).argmax(0)
    stuff_ids: dict[int, int] = {}
    for k in range(labels.shape[0]):
        category = int(labels[k])
        own = probs[k] >= 0.5
        won = winner == k
        mask = won & own
        won_area, own_area, area = int(won.sum()), int(own.sum()), int(mask.sum())
        if won_area == 0 or own_area == 0 or area == 0 or won_area / own_area < overlap_threshold:
            continue
        thing = bool(isthing[category])
        if not thing and category in stuff_ids:
            ids[mask] = stuff_ids[category]
            continue
        segment_id = len(segments) + 1
        if not thing:
            stuff_ids[category] = segment_id
        ids[mask] = segment_id
        segments.append({"id": segment_id, "category": category, "isthing": thing, "score": float(scores[k])})
    return PanopticResult(ids, segments)


@dataclass
class InstanceResult:
    """Instance predictions of one image, best first.

    Attributes:
        masks: bool (N, H, W).
        scores: float (N,) in [0, 1].
        labels: int64 (N,) contiguous class indices.
    """

    masks: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def above(self, threshold: float) -> InstanceResult:
        """The predictions scoring above ``threshold``."""
        keep = self.scores > threshold
        return InstanceResult(self.masks[keep], self.scores[keep], self.labels[keep])


def instance_inference(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    test_topk_per_image: int = 100,
    isthing: Sequence[bool] | None = None,
) -> InstanceResult:
    """Mask2Former's instance inference for one image.

    Args:
        pred_logits: (Q, K + 1) class logits.
        pred_masks: (Q, H, W) mask logits at the output size.
        test_topk_per_image: (query, class) pairs kept before the thing filter (at most Q x K).
        isthing: per class index, True for things; given, stuff predictions are dropped (a panoptic model).

    Returns:
        The :class:`InstanceResult`, sorted by score (best first).
    """
    num_queries, num_classes = pred_logits.shape[0], pred_logits.shape[-1] - 1
    probs = pred_logits.float().softmax(-1)[:, :-1]
    topk = min(int(test_topk_per_image), num_queries * num_classes)
    scores, flat = probs.flatten().topk(topk, sorted=True)
    labels = flat % num_classes
    queries = torch.div(flat, num_classes, rounding_mode="floor")
    if isthing is not None:
        things = torch.as_tensor(list(isthing), dtype=torch.bool, device=labels.device)
        keep = things[labels]
        scores, labels, queries = scores[keep], labels[keep], queries[keep]
    logits = pred_masks[queries].float()
    masks = logits > 0
    flat_masks = masks.flatten(1).float()
    mask_scores = (logits.sigmoid().flatten(1) * flat_masks).sum(1) / (flat_masks.sum(1) + 1e-6)
    scores = scores * mask_scores
    order = scores.argsort(descending=True)
    return InstanceResult(masks[order], scores[order], labels[order].to(torch.int64))
