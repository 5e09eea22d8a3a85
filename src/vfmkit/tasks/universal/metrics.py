"""One evaluation pass of a universal segmenter, at the images' original resolution: panoptic quality
(``metrics/panoptic.py``, panopticapi's rules), mIoU (the dense confusion meter) and mask AP (COCO ``segm`` through
faster-coco-eval, ``metrics/coco.py``).

Mask AP's ground truth is the thing segments of the panoptic annotation (crowd segments as ``iscrowd`` regions) or,
for COCO-instances data, the file's own annotations (polygons / RLE, overlaps included). Predictions are
Mask2Former's instance inference (top-k (query, class) pairs over the thing classes) as RLE with the original
category ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vfmkit.data.coco_masks import mask_to_rle
from vfmkit.metrics.coco import evaluate_coco
from vfmkit.metrics.dense import SegmentationMeter
from vfmkit.metrics.panoptic import CategoryStat, PanopticQuality, Segment, segment_bbox
from vfmkit.tasks.universal.categories import IGNORE, CategoryTable, SegmentInfo
from vfmkit.tasks.universal.postprocess import (
    instance_inference,
    panoptic_inference,
    resize_mask_logits,
    semantic_inference,
)

MASK_AP_KEYS = ("mask_ap", "mask_ap50", "mask_ap75")


def _clean(value):
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


class UniversalEvaluator:
    """Accumulates PQ / SQ / RQ (All, Things, Stuff, per class), mIoU and mask AP over images.

    Args:
        categories: the category table (contiguous order, original ids).
        object_mask_threshold: panoptic inference: minimum class probability of a kept query.
        overlap_threshold: panoptic inference: minimum share of its mask a query must win.
        test_topk_per_image: instance inference: (query, class) pairs kept per image.
        merge_stuff: PQ: merge stuff segments of one category per image first (default False: score the segments
            as given, exactly as panopticapi does; vfmkit's panoptic inference already merges stuff per category).
    """

    def __init__(
        self,
        categories: CategoryTable,
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        test_topk_per_image: int = 100,
        merge_stuff: bool = False,
    ):
        self.categories = categories
        self.object_mask_threshold, self.overlap_threshold = object_mask_threshold, overlap_threshold
        self.test_topk_per_image = test_topk_per_image
        self.pq = PanopticQuality(dict(enumerate(categories.isthing)), dict(enumerate(categories.names)), merge_stuff)
        self.semantic = SegmentationMeter(len(categories), ignore_index=IGNORE)
        self.reset()

    def reset(self) -> None:
        self.pq.reset()
        self.semantic.reset()
        self.counts = {"panoptic": 0, "semantic": 0, "instance": 0}
        self.images: list[dict] = []  # instance task: {id, width, height} of every image
        self.objects: list[dict] = []  # instance task: ground-truth COCO annotations
        self.results: list[dict] = []  # instance task: predictions (RLE, original category ids)

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
        ids = _numpy(ids)
        masks = resize_mask_logits(pred_masks, ids.shape)
        result = panoptic_inference(
            pred_logits, masks, self.categories.isthing, self.object_mask_threshold, self.overlap_threshold
        )
        gt = [Segment(s.id, s.category, int(s.iscrowd), s.area) for s in segments]
        pred = [Segment(s["id"], s["category"]) for s in result.segments]
        self.pq.update(ids, gt, result.ids.cpu().numpy(), pred, image)
        self.counts["panoptic"] += 1

    @torch.no_grad()
    def update_semantic(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, semantic: torch.Tensor) -> None:
        """Add one image's semantic prediction: logits (Q, K + 1), masks (Q, h, w) (the model run with the semantic
        task), ground truth int64 (H, W) (``IGNORE`` where unlabeled)."""
        masks = resize_mask_logits(pred_masks, tuple(semantic.shape))
        scores = semantic_inference(pred_logits.float(), masks.float())
        self.semantic.update(scores.argmax(0)[None].cpu(), semantic[None].cpu())
        self.counts["semantic"] += 1

    @torch.no_grad()
    def update_instance(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        image_id: int | str,
        ids: np.ndarray | torch.Tensor,
        segments: Sequence[SegmentInfo],
        objects: Sequence[dict] | None = None,
    ) -> None:
        """Add one image's instance prediction and ground truth.

        Args:
            pred_logits: (Q, K + 1) class logits (the model run with the instance task).
            pred_masks: (Q, h, w) mask logits (resized here to the ground truth's size).
            image_id: the image id of the annotation file.
            ids: int (H, W) ground-truth segment ids (their size is the image's).
            segments: the ground-truth segments: their things are the objects when ``objects`` is None.
            objects: COCO-instances data: the image's COCO annotations (original ids, polygons / RLE).
        """
        ids = _numpy(ids)
        height, width = ids.shape
        self.images.append({"id": image_id, "width": int(width), "height": int(height)})
        masks = resize_mask_logits(pred_masks, (height, width))
        found = instance_inference(pred_logits, masks, self.test_topk_per_image, self.categories.isthing)
        original = self.categories.original_ids
        for mask, score, label in zip(
            found.masks.cpu().numpy(), found.scores.tolist(), found.labels.tolist(), strict=True
        ):
            self.results.append(
                {
                    "image_id": image_id,
                    "category_id": original[label],
                    "score": float(score),
                    "segmentation": mask_to_rle(mask),
                    "bbox": segment_bbox(mask),
                }
            )
        if objects is not None:
            self.objects += [dict(obj) for obj in objects]
        else:
            for segment in segments:
                mask = ids == segment.id
                if self.categories.isthing[segment.category] and mask.any():
                    self.objects.append(_object(image_id, mask, original[segment.category], segment))
        self.counts["instance"] += 1

    def gather(self, gather_sum: Callable[[torch.Tensor], torch.Tensor], gather_objects: Callable[[list], list]):
        """Replace this process's state by the state of every process (multi-device validation).

        Args:
            gather_sum: a tensor -> its sum over the processes.
            gather_objects: a list -> the concatenation of every process's list.
        """
        stats = torch.tensor([[s.tp, s.fp, s.fn, s.iou] for s in self.pq.stats.values()], dtype=torch.float64)
        stats = gather_sum(stats)
        for (category, _), row in zip(self.pq.stats.items(), stats.tolist(), strict=True):
            self.pq.stats[category] = CategoryStat(int(row[0]), int(row[1]), int(row[2]), float(row[3]))
        self.semantic.confusion = gather_sum(self.semantic.confusion)
        counts = gather_sum(torch.tensor(list(self.counts.values()), dtype=torch.int64)).tolist()
        self.counts = dict(zip(self.counts, counts, strict=True))
        self.images, self.objects, self.results = (gather_objects(x) for x in (self.images, self.objects, self.results))

    def compute(self) -> dict:
        """The metrics as fractions (None where undefined).

        Returns:
            ``pq``, ``sq``, ``rq`` (All), ``pq_things`` / ``sq_things`` / ``rq_things``, ``pq_stuff`` ...,
            ``n_things``, ``n_stuff``, ``miou``, ``pixel_accuracy``, ``mask_ap`` / ``mask_ap50`` / ``mask_ap75``
            (COCO segm AP@[.50:.95] / @.50 / @.75), and ``per_class``: one dict per category (``id`` original,
            ``name``, ``isthing``, ``pq``, ``sq``, ``rq``, ``tp``, ``fp``, ``fn``, ``iou``, ``ap``). Keys of a task
            that was not evaluated are None.
        """
        out: dict = {}
        pq = self.pq.compute() if self.counts["panoptic"] else None
        for group, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
            for key in ("pq", "sq", "rq"):
                out[f"{key}{suffix}"] = _clean(pq[group][key]) if pq else None
        out["n_things"] = pq["things"]["n"] if pq else None
        out["n_stuff"] = pq["stuff"]["n"] if pq else None
        semantic = self.semantic.compute() if self.counts["semantic"] else None
        out["miou"] = _clean(semantic["miou"]) if semantic else None
        out["pixel_accuracy"] = _clean(semantic["pixel_accuracy"]) if semantic else None
        masks = self._mask_ap()
        out.update({key: getattr(masks, key.removeprefix("mask_")) if masks else None for key in MASK_AP_KEYS})
        per_class = []
        for k, category in enumerate(self.categories.categories):
            row = {"id": category.id, "name": category.name, "isthing": category.isthing}
            stat = pq["per_class"][k] if pq else {}
            for key in ("pq", "sq", "rq", "tp", "fp", "fn"):
                row[key] = _clean(stat[key]) if stat and stat["counted"] else None
            row["iou"] = _clean(semantic["iou"][k]) if semantic else None
            row["ap"] = masks.per_class_ap.get(category.id) if masks else None
            per_class.append(row)
        out["per_class"] = per_class
        return out

    def _mask_ap(self) -> Any:
        """COCO segm metrics of the instance predictions, None without an instance pass or thing categories."""
        things = [c for c in self.categories.categories if c.isthing]
        if not self.counts["instance"] or not things:
            return None
        ground_truth = {
            "images": self.images,
            "annotations": self.objects,
            "categories": [{"id": c.id, "name": c.name} for c in things],
        }
        return evaluate_coco(ground_truth, self.results, "segm")


def _numpy(ids: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)


def _object(image_id: int | str, mask: np.ndarray, category_id: int, segment: SegmentInfo) -> dict:
    """A ground-truth COCO annotation of one thing segment (RLE; crowd segments are ``iscrowd`` regions)."""
    return {
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": mask_to_rle(mask),
        "area": float(mask.sum()),
        "bbox": segment_bbox(mask),
        "iscrowd": int(segment.iscrowd),
    }
