"""One evaluation pass of a universal segmenter: panoptic quality (``metrics/panoptic.py``, panopticapi's rules) and
mIoU (the dense confusion meter), both at the images' original resolution.

Mask AP (COCO ``segm`` through faster-coco-eval) joins here once the COCO evaluation wrapper exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from vfmkit.metrics.dense import SegmentationMeter
from vfmkit.metrics.panoptic import PanopticQuality, Segment
from vfmkit.tasks.universal.categories import IGNORE, CategoryTable, SegmentInfo
from vfmkit.tasks.universal.postprocess import panoptic_inference, resize_mask_logits, semantic_inference


def _clean(value):
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


class UniversalEvaluator:
    """Accumulates PQ / SQ / RQ (All, Things, Stuff, per class) and mIoU over images.

    Args:
        categories: the category table (contiguous order, original ids).
        object_mask_threshold: panoptic inference: minimum class probability of a kept query.
        overlap_threshold: panoptic inference: minimum share of its mask a query must win.
        merge_stuff: PQ: merge stuff segments of one category per image (see :class:`PanopticQuality`).
    """

    def __init__(
        self,
        categories: CategoryTable,
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        merge_stuff: bool = True,
    ):
        self.categories = categories
        self.object_mask_threshold, self.overlap_threshold = object_mask_threshold, overlap_threshold
        isthing = dict(enumerate(categories.isthing))
        self.pq = PanopticQuality(isthing, dict(enumerate(categories.names)), merge_stuff)
        self.semantic = SegmentationMeter(len(categories), ignore_index=IGNORE)
        self.panoptic_images = self.semantic_images = 0

    def reset(self) -> None:
        self.pq.reset()
        self.semantic.reset()
        self.panoptic_images = self.semantic_images = 0

    @torch.no_grad()
    def update_panoptic(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        ids: np.ndarray | torch.Tensor,
        segments: Sequence[SegmentInfo],
        image: str | int = "?",
    ) -> None:
        """Add one image's panoptic prediction.

        Args:
            pred_logits: (Q, K + 1) class logits (the model run with the panoptic task).
            pred_masks: (Q, h, w) mask logits (resized here to the ground truth's size).
            ids: int (H, W) ground-truth segment ids.
            segments: the ground-truth segments (contiguous categories).
            image: the image id (for errors).
        """
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
        masks = resize_mask_logits(pred_masks, ids.shape)
        result = panoptic_inference(
            pred_logits, masks, self.categories.isthing, self.object_mask_threshold, self.overlap_threshold
        )
        gt = [Segment(s.id, s.category, int(s.iscrowd), s.area) for s in segments]
        pred = [Segment(s["id"], s["category"]) for s in result.segments]
        self.pq.update(ids, gt, result.ids.cpu().numpy(), pred, image)
        self.panoptic_images += 1

    @torch.no_grad()
    def update_semantic(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, semantic: torch.Tensor) -> None:
        """Add one image's semantic prediction: logits (Q, K + 1), masks (Q, h, w) (the model run with the semantic
        task), ground truth int64 (H, W) (``IGNORE`` where unlabeled)."""
        masks = resize_mask_logits(pred_masks, tuple(semantic.shape))
        scores = semantic_inference(pred_logits.float(), masks.float())
        self.semantic.update(scores.argmax(0)[None].cpu(), semantic[None].cpu())
        self.semantic_images += 1

    def compute(self) -> dict:
        """The metrics as fractions (None where undefined).

        Returns:
            ``pq``, ``sq``, ``rq`` (All), ``pq_things`` / ``sq_things`` / ``rq_things``, ``pq_stuff`` ...,
            ``n_things``, ``n_stuff``, ``miou``, ``pixel_accuracy``, and ``per_class``: one dict per category
            (``id`` original, ``name``, ``isthing``, ``pq``, ``sq``, ``rq``, ``tp``, ``fp``, ``fn``, ``iou``).
            Keys of a task that was not evaluated are None.
        """
        out: dict = {}
        pq = self.pq.compute() if self.panoptic_images else None
        for group, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
            for key in ("pq", "sq", "rq"):
                out[f"{key}{suffix}"] = _clean(pq[group][key]) if pq else None
        out["n_things"] = pq["things"]["n"] if pq else None
        out["n_stuff"] = pq["stuff"]["n"] if pq else None
        semantic = self.semantic.compute() if self.semantic_images else None
        out["miou"] = _clean(semantic["miou"]) if semantic else None
        out["pixel_accuracy"] = _clean(semantic["pixel_accuracy"]) if semantic else None
        per_class = []
        for k, category in enumerate(self.categories.categories):
            row = {"id": category.id, "name": category.name, "isthing": category.isthing}
            stat = pq["per_class"][k] if pq else {}
            for key in ("pq", "sq", "rq", "tp", "fp", "fn"):
                row[key] = _clean(stat[key]) if stat and stat["counted"] else None
            row["iou"] = _clean(semantic["iou"][k]) if semantic else None
            per_class.append(row)
        out["per_class"] = per_class
        return out
