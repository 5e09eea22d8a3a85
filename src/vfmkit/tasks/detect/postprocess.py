"""From raw DETR outputs to detections: top-k over queries x classes (NMS-free, as RT-DETR / DINO), boxes in pixels.

:func:`postprocess_detections` uses only traceable tensor operations (sigmoid, topk, floor division, gather), so it
runs inside the exported ONNX graph when ``export.postprocess`` is on. :func:`to_coco_results` turns its output into
COCO results entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.ops import box_convert


def postprocess_detections(
    pred_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    orig_sizes: torch.Tensor,
    num_select: int = 300,
    category_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``num_select`` best (query, class) pairs per image.

    Args:
        pred_logits: (B, Q, C) raw logits (sigmoid scores).
        pred_boxes: (B, Q, 4) cxcywh normalised to [0, 1].
        orig_sizes: (B, 2) (height, width) in pixels of the images the boxes should be expressed in (int or float).
        num_select: K, detections kept per image (at most Q * C).
        category_ids: (C,) int64 original category id per label; None keeps contiguous labels.

    Returns:
        ``boxes`` (B, K, 4) float xyxy in pixels, ``scores`` (B, K) float in [0, 1] (descending), ``labels`` (B, K)
        int64 (original category ids when ``category_ids`` is given).
    """
    batch, queries, classes = pred_logits.shape
    k = min(int(num_select), queries * classes)
    scores, index = pred_logits.sigmoid().flatten(1).topk(k, dim=1)
    labels = index % classes
    query = torch.div(index, classes, rounding_mode="floor")
    boxes = torch.gather(pred_boxes, 1, query[..., None].expand(-1, -1, 4))
    height, width = orig_sizes[:, 0:1].to(boxes.dtype), orig_sizes[:, 1:2].to(boxes.dtype)
    scale = torch.stack([width, height, width, height], dim=-1)  # (B, 1, 4)
    boxes = box_convert(boxes, "cxcywh", "xyxy") * scale
    if category_ids is not None:
        labels = category_ids.to(labels.device)[labels]
    return boxes, scores, labels


def to_coco_results(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_ids: Sequence[int],
    conf_threshold: float = 0.0,
) -> list[dict[str, Any]]:
    """COCO results entries of a batch.

    Args:
        boxes: (B, K, 4) xyxy pixels; scores: (B, K); labels: (B, K) original category ids.
        image_ids: the B image ids.
        conf_threshold: keep detections with score >= this.

    Returns:
        ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per kept detection (Python numbers).
    """
    results = []
    xywh = box_convert(boxes.detach().float().cpu(), "xyxy", "xywh")
    scores, labels = scores.detach().float().cpu(), labels.detach().cpu()
    for b, image_id in enumerate(image_ids):
        keep = scores[b] >= conf_threshold
        for box, score, label in zip(
            xywh[b][keep].tolist(), scores[b][keep].tolist(), labels[b][keep].tolist(), strict=True
        ):
            results.append({"image_id": int(image_id), "category_id": int(label), "bbox": box, "score": float(score)})
    return results


RESULT_FIELDS = 7
"""Numbers per detection in :func:`pack_results`: image id, category id, x, y, w, h, score."""


def pack_results(results: Sequence[dict[str, Any]]) -> torch.Tensor:
    """COCO results entries as a float64 (N * 7,) tensor (to gather them over processes)."""
    rows = [[r["image_id"], r["category_id"], *r["bbox"], r["score"]] for r in results]
    return torch.tensor(rows, dtype=torch.float64).reshape(-1)


def unpack_results(packed: torch.Tensor) -> list[dict[str, Any]]:
    """The inverse of :func:`pack_results`."""
    rows = packed.reshape(-1, RESULT_FIELDS).tolist()
    return [{"image_id": int(row[0]), "category_id": int(row[1]), "bbox": row[2:6], "score": row[6]} for row in rows]
