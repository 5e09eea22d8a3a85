"""COCO evaluation (``bbox`` and ``segm``) through faster-coco-eval, with defined edge cases.

:func:`evaluate_coco` takes the ground truth as a COCO dict (original category ids) and a results list
(``{"image_id", "category_id", "score", "bbox": [x, y, w, h]}`` pixels, plus ``"segmentation"`` RLE / polygons for
``segm``) and returns :class:`CocoMetrics`: the 12 standard numbers' main ones, per-class AP and the
precision-recall curves. The numbers are computed from faster-coco-eval's accumulated precision / recall arrays
exactly as pycocotools' ``summarize`` does (a test checks parity with pycocotools). Where pycocotools prints -1
(nothing to average: e.g. no ground-truth objects of that size, or a class without objects) the value here is None;
no predictions at all give 0.0 wherever ground truth exists.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from vfmkit.errors import VfmError

IouType = Literal["bbox", "segm"]


@dataclass
class CocoMetrics:
    """COCO evaluation results (maxDets 100 unless named).

    Attributes:
        iou_type: ``bbox`` or ``segm``.
        ap: AP@[.50:.95] (the primary metric); ap50, ap75: AP at IoU 0.50 / 0.75.
        ap_small, ap_medium, ap_large: AP@[.50:.95] by object area (< 32^2, 32^2-96^2, > 96^2 pixels).
        ar1, ar10, ar100: AR@[.50:.95] with 1 / 10 / 100 detections per image.
        per_class_ap, per_class_ap50: original category id -> AP@[.50:.95] / AP50 (None: no objects of the class).
        recall_thresholds: (101,) the recall points of the curves, 0.00 .. 1.00.
        pr_curves: category id -> (101,) interpolated precision at IoU 0.50, all areas (None: no objects).
        category_names: category id -> name.
        num_images, num_objects, num_detections: what was evaluated (objects exclude crowd regions).
    """

    iou_type: str
    ap: float | None
    ap50: float | None
    ap75: float | None
    ap_small: float | None
    ap_medium: float | None
    ap_large: float | None
    ar1: float | None
    ar10: float | None
    ar100: float | None
    per_class_ap: dict[int, float | None] = field(default_factory=dict)
    per_class_ap50: dict[int, float | None] = field(default_factory=dict)
    recall_thresholds: np.ndarray = field(default_factory=lambda: np.linspace(0.0, 1.0, 101))
    pr_curves: dict[int, np.ndarray | None] = field(default_factory=dict)
    category_names: dict[int, str] = field(default_factory=dict)
    num_images: int = 0
    num_objects: int = 0
    num_detections: int = 0

    SUMMARY_KEYS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100")

    def summary(self) -> dict[str, float | None]:
        """The scalar metrics by name."""
        return {key: getattr(self, key) for key in self.SUMMARY_KEYS}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (curves as lists, ids as strings)."""
        return {
            "iou_type": self.iou_type,
            **self.summary(),
            "per_class": {
                str(cid): {"name": self.category_names.get(cid, str(cid)), "ap": ap, "ap50": self.per_class_ap50[cid]}
                for cid, ap in self.per_class_ap.items()
            },
            "num_images": self.num_images,
            "num_objects": self.num_objects,
            "num_detections": self.num_detections,
        }


def _mean(values: np.ndarray) -> float | None:
    """Mean of the defined entries (> -1), None when there is none (pycocotools prints -1)."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


def _check_results(ground_truth: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> None:
    """Refuse results that name images or categories outside the ground truth, or lack the needed keys."""
    image_ids = {image["id"] for image in ground_truth.get("images", [])}
    category_ids = {cat["id"] for cat in ground_truth.get("categories", [])}
    needed = ("image_id", "category_id", "score", "bbox" if iou_type == "bbox" else "segmentation")
    for index, result in enumerate(results):
        missing = [key for key in needed if key not in result]
        if missing:
            raise VfmError(f"COCO results[{index}]: missing key(s) {missing} for iouType {iou_type}")
        if result["image_id"] not in image_ids:
            raise VfmError(f"COCO results[{index}]: image_id {result['image_id']} is not in the ground truth")
        if result["category_id"] not in category_ids:
            raise VfmError(
                f"COCO results[{index}]: category_id {result['category_id']} is not in the ground truth categories "
                f"{sorted(category_ids)} (results must use the original category ids)"
            )


def evaluate_coco(
    ground_truth: dict[str, Any], results: list[dict[str, Any]], iou_type: IouType = "bbox"
) -> CocoMetrics:
    """COCO AP / AR of ``results`` against ``ground_truth`` with faster-coco-eval.

    Args:
        ground_truth: COCO dict with ``images``, ``annotations`` (``bbox``, ``area``, ``iscrowd``, and
            ``segmentation`` for segm) and ``categories`` (original ids). Not modified; annotation ids are not
            used (any values, 0 included).
        results: detections with original category ids (see the module docstring). Not modified.
        iou_type: ``bbox`` or ``segm``.

    Returns:
        The :class:`CocoMetrics`.

    Raises:
        VfmError: an unknown iou type, or results naming unknown images / categories or missing keys.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    if iou_type not in ("bbox", "segm"):
        raise VfmError(f"COCO iou_type must be bbox or segm, got {iou_type!r}")
    _check_results(ground_truth, results, iou_type)
    gt = {
        **ground_truth,
        "images": [dict(i) for i in ground_truth["images"]],
        # ids renumbered from 1: the evaluator uses annotation id 0 as its "unmatched" marker
        "annotations": [{**a, "id": i + 1} for i, a in enumerate(ground_truth.get("annotations", []))],
        "categories": [dict(c) for c in ground_truth["categories"]],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *_: None)
        evaluator.evaluate()
        evaluator.accumulate()
    return _metrics(evaluator, gt, len(results), iou_type)


def _metrics(evaluator: Any, gt: dict[str, Any], num_detections: int, iou_type: str) -> CocoMetrics:
    """Summarise the accumulated arrays as pycocotools' ``summarize`` does."""
    params = evaluator.params
    precision = np.asarray(evaluator.eval["precision"])  # (T iou, R recall, K classes, A areas, M maxDets)
    recall = np.asarray(evaluator.eval["recall"])  # (T, K, A, M)
    iou_thrs = np.asarray(params.iouThrs)
    t50, t75 = int(np.argmin(np.abs(iou_thrs - 0.5))), int(np.argmin(np.abs(iou_thrs - 0.75)))
    areas = list(params.areaRngLbl)
    all_, small, medium, large = (areas.index(n) for n in ("all", "small", "medium", "large"))
    max_dets = list(params.maxDets)
    m100 = max_dets.index(100)
    cat_ids = [int(c) for c in params.catIds]
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
    metrics = CocoMetrics(
        iou_type=iou_type,
        ap=_mean(precision[:, :, :, all_, m100]),
        ap50=_mean(precision[t50, :, :, all_, m100]),
        ap75=_mean(precision[t75, :, :, all_, m100]),
        ap_small=_mean(precision[:, :, :, small, m100]),
        ap_medium=_mean(precision[:, :, :, medium, m100]),
        ap_large=_mean(precision[:, :, :, large, m100]),
        ar1=_mean(recall[:, :, all_, max_dets.index(1)]),
        ar10=_mean(recall[:, :, all_, max_dets.index(10)]),
        ar100=_mean(recall[:, :, all_, m100]),
        recall_thresholds=np.asarray(params.recThrs),
        category_names=names,
        num_images=len(gt["images"]),
        num_objects=sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0)),
        num_detections=num_detections,
    )
    for k, cid in enumerate(cat_ids):
        metrics.per_class_ap[cid] = _mean(precision[:, :, k, all_, m100])
        metrics.per_class_ap50[cid] = _mean(precision[t50, :, k, all_, m100])
        curve = precision[t50, :, k, all_, m100]
        metrics.pr_curves[cid] = curve.copy() if (curve > -1).any() else None
    return metrics
