"""COCO evaluation through faster-coco-eval: edge cases (perfect 1.0, none 0.0, undefined None, shifted boxes < 1,
sparse ids kept), segm masks, and parity with pycocotools on a generated fixture."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from vfmkit.errors import VfmError
from vfmkit.metrics.coco import CocoMetrics, evaluate_coco

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"}, {"id": 7, "name": "triangle"}]


def _ground_truth() -> dict:
    """Three 200x200 images; small (< 32^2) and medium objects, no large ones; category 7 has no objects."""
    boxes = {1: [(10, 10, 20, 20, 1), (100, 100, 60, 50, 3)], 2: [(50, 60, 40, 40, 3)], 3: []}
    annotations = []
    for image_id, objects in boxes.items():
        for x, y, w, h, cat in objects:
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )  # ids start at 0 on purpose (Roboflow exports do)
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in boxes]
    return {"images": images, "annotations": annotations, "categories": copy.deepcopy(CATEGORIES)}


def _perfect(gt: dict) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.9}
        for a in gt["annotations"]
    ]


def test_perfect_predictions_give_one_and_undefined_is_none():
    gt = _ground_truth()
    before = copy.deepcopy(gt)
    metrics = evaluate_coco(gt, _perfect(gt))
    assert gt == before  # inputs untouched
    for key in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ar1", "ar10", "ar100"):
        assert getattr(metrics, key) == pytest.approx(1.0), key
    assert metrics.ap_large is None  # no large objects: undefined, not -1
    assert metrics.per_class_ap == {1: pytest.approx(1.0), 3: pytest.approx(1.0), 7: None}  # original ids
    assert metrics.pr_curves[7] is None and np.allclose(metrics.pr_curves[3], 1.0)
    assert (metrics.num_images, metrics.num_objects, metrics.num_detections) == (3, 3, 3)


def test_no_predictions_give_zero_not_minus_one():
    metrics = evaluate_coco(_ground_truth(), [])
    assert metrics.ap == 0.0 and metrics.ap50 == 0.0 and metrics.ar100 == 0.0 and metrics.ap_small == 0.0
    assert metrics.ap_large is None and metrics.per_class_ap[1] == 0.0 and metrics.per_class_ap[7] is None


def test_shifted_boxes_score_below_one():
    gt = _ground_truth()
    shifted = _perfect(gt)
    for result in shifted:
        result["bbox"][0] += result["bbox"][2] * 0.2
    metrics = evaluate_coco(gt, shifted)
    assert 0.0 < metrics.ap < 1.0 and metrics.ap50 == pytest.approx(1.0) and metrics.ap75 < 1.0


def test_results_must_use_the_original_category_ids():
    gt = _ground_truth()
    contiguous = [dict(r, category_id=0) for r in _perfect(gt)]
    with pytest.raises(VfmError, match=r"category_id 0 is not in the ground truth categories \[1, 3, 7\]"):
        evaluate_coco(gt, contiguous)
    with pytest.raises(VfmError, match=r"image_id 42"):
        evaluate_coco(gt, [dict(_perfect(gt)[0], image_id=42)])
    with pytest.raises(VfmError, match=r"missing key\(s\) \['score'\]"):
        evaluate_coco(gt, [{k: v for k, v in _perfect(gt)[0].items() if k != "score"}])


def test_segm_masks():
    from faster_coco_eval.core import mask as mask_utils

    gt = _ground_truth()
    results = []
    for ann in gt["annotations"]:
        canvas = np.zeros((200, 200), dtype=np.uint8, order="F")
        x, y, w, h = ann["bbox"]
        canvas[y : y + h, x : x + w] = 1
        rle = mask_utils.encode(np.asfortranarray(canvas))
        rle["counts"] = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        ann["segmentation"] = rle
        results.append(
            {"image_id": ann["image_id"], "category_id": ann["category_id"], "segmentation": rle, "score": 1.0}
        )
    metrics = evaluate_coco(gt, results, iou_type="segm")
    assert metrics.iou_type == "segm" and metrics.ap == pytest.approx(1.0)
    shrunk = copy.deepcopy(results)
    for result, ann in zip(shrunk, gt["annotations"], strict=True):
        canvas = np.zeros((200, 200), dtype=np.uint8)
        x, y, w, h = ann["bbox"]
        canvas[y : y + h // 3, x : x + w] = 1  # mask IoU ~ 1/3
        result["segmentation"] = mask_utils.encode(np.asfortranarray(canvas))
    assert evaluate_coco(gt, shrunk, iou_type="segm").ap50 == 0.0


def _fixture(seed: int = 0) -> tuple[dict, list[dict]]:
    """20 images, 4 classes with sparse ids, all sizes, crowd regions, noisy / missed / false detections."""
    rng = np.random.default_rng(seed)
    categories = [{"id": cid, "name": f"c{cid}"} for cid in (2, 5, 9, 11)]
    images, annotations, results = [], [], []
    for image_id in range(1, 21):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(0, 6))):
            w, h = (float(v) for v in rng.uniform(8, 200, 2))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            cat = int(rng.choice([2, 5, 9, 11]))
            crowd = int(rng.random() < 0.1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
            if rng.random() < 0.85:
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": cat if rng.random() < 0.9 else 5,
                        "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
                        "score": float(rng.uniform(0.05, 1)),
                    }
                )
        for _ in range(int(rng.integers(0, 3))):
            w, h = (float(v) for v in rng.uniform(10, 100, 2))
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.choice([2, 5, 9, 11])),
                    "bbox": [float(rng.uniform(0, 500)), float(rng.uniform(0, 380)), w, h],
                    "score": float(rng.uniform(0, 0.6)),
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _pycocotools_stats(gt: dict, results: list[dict]) -> np.ndarray:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats, evaluator.eval["precision"]


def test_pycocotools_gives_the_same_numbers():
    pytest.importorskip("pycocotools")
    gt, results = _fixture()
    ours = evaluate_coco(gt, results)
    stats, precision = _pycocotools_stats(gt, results)
    keys = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100")
    expected = dict(zip(keys, stats[:9], strict=True))
    for key in keys:
        value = getattr(ours, key)
        assert (value if value is not None else -1.0) == pytest.approx(expected[key], abs=1e-9), key
    assert 0.2 < ours.ap < 0.9  # a non-trivial fixture
    for k, cid in enumerate((2, 5, 9, 11)):
        column = precision[:, :, k, 0, -1]
        assert ours.per_class_ap[cid] == pytest.approx(column[column > -1].mean(), abs=1e-9)


def test_metrics_serialise():
    metrics = evaluate_coco(_ground_truth(), _perfect(_ground_truth()))
    data = metrics.as_dict()
    assert isinstance(metrics, CocoMetrics) and data["ap"] == pytest.approx(1.0) and data["ap_large"] is None
    assert data["per_class"]["3"] == {"name": "square", "ap": pytest.approx(1.0), "ap50": pytest.approx(1.0)}
