"""Panoptic quality (Kirillov et al., CVPR 2019) by the rules of the COCO ``panopticapi`` evaluator, and the COCO
panoptic file format (PNG ids, results JSON).

Format: a panoptic PNG holds one segment id per pixel, ``id = R + 256 G + 256^2 B`` (:func:`rgb2id`,
:func:`id2rgb`); id 0 (``VOID``) is unlabeled. Each image's ``segments_info`` lists its segments
``{id, category_id, iscrowd, area, bbox}``; categories say ``isthing``.

Rules of :class:`PanopticQuality` (panopticapi ``pq_compute_single_core`` / ``PQStat.pq_average``):

- Per image, the intersection of every (ground-truth id, predicted id) pair is counted once.
- A pair matches when both have the same category, the ground truth is not a crowd region, and
  ``IoU = inter / (pred_area + gt_area - inter - pred ∩ VOID) > 0.5`` (the predicted pixels on VOID are left out of
  the union). With IoU > 0.5 matching is unique by construction.
- An unmatched non-crowd ground truth is a false negative; crowd regions never are.
- An unmatched prediction is a false positive unless more than half of it lies on VOID plus the crowd region of its
  own category (``(pred ∩ VOID + pred ∩ crowd[cat]) / pred_area > 0.5``: then it is ignored). Like panopticapi, one
  crowd region per category and image is used (the last listed).
- Per category ``PQ = Σ IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = Σ IoU(TP) / TP`` (0 without TP),
  ``RQ = TP / (TP + FP/2 + FN/2)``. Categories with ``TP + FP + FN = 0`` are left out of the means (their per-class
  values are reported as 0 with ``counted: False``). All / Things / Stuff are the means over the counted categories
  of each group, with their count ``n`` (NaN means when ``n = 0``, where panopticapi divides by zero).
- Ground-truth areas come from ``segments_info`` when it lists them (panopticapi reads the JSON ``area``), else from
  the pixels; predicted areas are always counted from the pixels.
- Stuff is one segment per category and image: COCO's ground truth (panopticapi's converters) and the predictions
  vfmkit writes (Mask2Former's panoptic inference merges the stuff queries of one class) hold at most one segment
  per stuff category, and ``pq_compute`` scores segments as given. That is the default here too
  (``merge_stuff=False``); ``merge_stuff=True`` first merges the segments of each stuff category, in the ground
  truth and in the prediction, for files from tools that split stuff (panopticapi would count the extra pieces as
  false positives / negatives).

Predictions are checked like panopticapi does: a predicted id in the PNG but not in ``segments_info``, a listed
segment absent from the PNG, or an unknown category is a :class:`~vfmkit.errors.DataError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vfmkit.data.coco_panoptic import read_coco_panoptic, read_coco_panoptic_results
from vfmkit.errors import DataError, UnreadableFileError
from vfmkit.utils.atomic import atomic_write_bytes

VOID = 0
OFFSET = 256 * 256 * 256


def rgb2id(color: np.ndarray | Sequence[int]) -> np.ndarray | int:
    """Panoptic segment ids from colours: uint8 (H, W, 3) -> int64 (H, W); or one (r, g, b) -> int.
    ``id = R + 256 G + 256^2 B``."""
    if isinstance(color, np.ndarray) and color.ndim == 3:
        color = color.astype(np.int64)
        return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]
    r, g, b = (int(c) for c in color)
    return r + 256 * g + 256 * 256 * b


def id2rgb(ids: np.ndarray | int) -> np.ndarray | list[int]:
    """Colours of panoptic segment ids: int (H, W) in [0, 256^3) -> uint8 (H, W, 3); or one id -> [r, g, b]."""
    if isinstance(ids, np.ndarray):
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= OFFSET):
            raise ValueError(f"panoptic ids must be in [0, {OFFSET}), got {ids.min()}..{ids.max()}")
        return np.stack([(ids // 256**c) % 256 for c in range(3)], axis=-1).astype(np.uint8)
    return [(int(ids) // 256**c) % 256 for c in range(3)]


@dataclass(frozen=True)
class Segment:
    """One entry of ``segments_info``.

    Attributes:
        id: segment id in the PNG (> 0).
        category_id: category (whatever ids the evaluator's categories use).
        iscrowd: 1 for a crowd region (ground truth only).
        area: pixel count, or None to count it from the PNG.
    """

    id: int
    category_id: int
    iscrowd: int = 0
    area: int | None = None


@dataclass
class CategoryStat:
    """Accumulated matches of one category: true positives, false positives, false negatives, Σ IoU of the TPs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0


@dataclass
class PanopticQuality:
    """Accumulates PQ over images (see the module docstring for the rules).

    Args:
        categories: category id -> True for a thing, False for stuff (every id a segment may use).
        names: optional category id -> name, added to the per-class results.
        merge_stuff: merge segments of one stuff category per image before matching (default False: as
            panopticapi).
    """

    categories: Mapping[int, bool]
    names: Mapping[int, str] = field(default_factory=dict)
    merge_stuff: bool = False
    stats: dict[int, CategoryStat] = field(init=False)
    images: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.categories = {int(k): bool(v) for k, v in self.categories.items()}
        self.stats = {k: CategoryStat() for k in self.categories}

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.stats = {k: CategoryStat() for k in self.categories}
        self.images = 0

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[Segment],
        pred_ids: np.ndarray,
        pred_segments: Sequence[Segment],
        image: str | int = "?",
    ) -> None:
        """Add one image.

        Args:
            gt_ids: int (H, W) ground-truth segment ids (0 = VOID).
            gt_segments: its segments (ids in the map not listed here are ignored, as in panopticapi).
            pred_ids: int (H, W) predicted segment ids (0 = no prediction).
            pred_segments: the predicted segments (``iscrowd`` ignored).
            image: the image id or name, used in errors.

        Raises:
            DataError: maps of different shapes, a predicted id absent from ``pred_segments`` or listed but absent
                from the map, or an unknown category.
        """
        gt_ids, pred_ids = np.asarray(gt_ids, dtype=np.int64), np.asarray(pred_ids, dtype=np.int64)
        if gt_ids.shape != pred_ids.shape:
            raise DataError(
                f"image {image}: prediction {pred_ids.shape} and ground truth {gt_ids.shape} differ in size"
            )
        gt_segments = list(gt_segments)
        if self.merge_stuff:
            gt_ids, gt_segments = merge_stuff_segments(gt_ids, gt_segments, self.categories)
            pred_ids, pred_segments = merge_stuff_segments(pred_ids, list(pred_segments), self.categories)
        gt = {s.id: s for s in gt_segments}
        pred_area = self._predicted_areas(pred_ids, pred_segments, image)
        gt_area = self._gt_areas(gt_ids, gt_segments, image)
        pairs = _intersections(gt_ids, pred_ids)
        pred = {s.id: s for s in pred_segments}
        self._accumulate(gt, gt_area, pred, pred_area, pairs)
        self.images += 1

    def _predicted_areas(self, ids: np.ndarray, segments: Sequence[Segment], image) -> dict[int, int]:
        listed = {s.id: s for s in segments}
        labels, counts = np.unique(ids, return_counts=True)
        areas = {}
        for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
            if label == VOID:
                continue
            if label not in listed:
                raise DataError(f"image {image}: predicted segment id {label} is in the PNG but not in segments_info")
            if listed[label].category_id not in self.categories:
                raise DataError(
                    f"image {image}: predicted segment {label} has unknown category_id {listed[label].category_id}"
                )
            areas[label] = count
        missing = sorted(set(listed) - set(areas))
        if missing:
            raise DataError(f"image {image}: predicted segment ids {missing} are in segments_info but not in the PNG")
        return areas

    def _gt_areas(self, ids: np.ndarray, segments: Sequence[Segment], image) -> dict[int, int]:
        labels, counts = np.unique(ids, return_counts=True)
        counted = dict(zip(labels.tolist(), counts.tolist(), strict=True))
        for s in segments:
            if s.category_id not in self.categories:
                raise DataError(f"image {image}: ground-truth segment {s.id} has unknown category_id {s.category_id}")
        return {s.id: int(s.area) if s.area is not None else counted.get(s.id, 0) for s in segments}

    def _accumulate(self, gt, gt_area, pred, pred_area, pairs: dict[tuple[int, int], int]) -> None:
        gt_matched, pred_matched = set(), set()
        for (gt_id, pred_id), inter in pairs.items():
            if gt_id not in gt or pred_id not in pred or gt[gt_id].iscrowd == 1:
                continue
            if gt[gt_id].category_id != pred[pred_id].category_id:
                continue
            union = pred_area[pred_id] + gt_area[gt_id] - inter - pairs.get((VOID, pred_id), 0)
            iou = inter / union
            if iou > 0.5:
                stat = self.stats[gt[gt_id].category_id]
                stat.tp += 1
                stat.iou += iou
                gt_matched.add(gt_id)
                pred_matched.add(pred_id)
        crowd = {}
        for gt_id, seg in gt.items():
            if gt_id in gt_matched:
                continue
            if seg.iscrowd == 1:
                crowd[seg.category_id] = gt_id  # the last crowd region of a category wins, as in panopticapi
                continue
            self.stats[seg.category_id].fn += 1
        for pred_id, seg in pred.items():
            if pred_id in pred_matched:
                continue
            ignored = pairs.get((VOID, pred_id), 0)
            if seg.category_id in crowd:
                ignored += pairs.get((crowd[seg.category_id], pred_id), 0)
            if ignored / pred_area[pred_id] > 0.5:
                continue
            self.stats[seg.category_id].fp += 1

    def compute(self) -> dict:
        """PQ / SQ / RQ of everything accumulated.

        Returns:
            ``{"all" | "things" | "stuff": {"pq", "sq", "rq", "n"}, "per_class": {category id: {"pq", "sq", "rq",
            "tp", "fp", "fn", "isthing", "counted"[, "name"]}}, "images": N}`` (values in [0, 1]).
        """
        per_class = {}
        for cat, stat in self.stats.items():
            counted = stat.tp + stat.fp + stat.fn > 0
            denominator = stat.tp + 0.5 * stat.fp + 0.5 * stat.fn
            entry = {
                "pq": stat.iou / denominator if counted else 0.0,
                "sq": stat.iou / stat.tp if stat.tp else 0.0,
                "rq": stat.tp / denominator if counted else 0.0,
                "tp": stat.tp,
                "fp": stat.fp,
                "fn": stat.fn,
                "isthing": self.categories[cat],
                "counted": counted,
            }
            if cat in self.names:
                entry["name"] = self.names[cat]
            per_class[cat] = entry
        groups = {"all": None, "things": True, "stuff": False}
        out = {name: _average(per_class, isthing) for name, isthing in groups.items()}
        out["per_class"] = per_class
        out["images"] = self.images
        return out


def _average(per_class: Mapping[int, dict], isthing: bool | None) -> dict:
    rows = [v for v in per_class.values() if v["counted"] and (isthing is None or v["isthing"] == isthing)]
    n = len(rows)
    if not n:
        return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}
    return {key: sum(r[key] for r in rows) / n for key in ("pq", "sq", "rq")} | {"n": n}


def _intersections(gt_ids: np.ndarray, pred_ids: np.ndarray) -> dict[tuple[int, int], int]:
    """Pixel count of every (gt id, pred id) pair present (panopticapi's ``gt * OFFSET + pred`` trick)."""
    if gt_ids.size and (gt_ids.max() >= OFFSET or pred_ids.max() >= OFFSET):
        raise DataError(f"panoptic ids must be below {OFFSET}")
    labels, counts = np.unique(gt_ids * OFFSET + pred_ids, return_counts=True)
    return {(int(k // OFFSET), int(k % OFFSET)): int(c) for k, c in zip(labels, counts, strict=True)}


def merge_stuff_segments(
    ids: np.ndarray, segments: Sequence[Segment], categories: Mapping[int, bool]
) -> tuple[np.ndarray, list[Segment]]:
    """Merge the non-crowd segments of each stuff category into its first one (ids relabelled in a copy).

    Args:
        ids: int (H, W) segment ids.
        segments: the segments; categories not in ``categories`` are left alone (reported later).
        categories: category id -> isthing.

    Returns:
        ``(ids, segments)``; unchanged objects when nothing is merged. Given areas are summed.
    """
    first: dict[int, Segment] = {}
    merged: dict[int, int] = {}
    for seg in segments:
        if seg.iscrowd or categories.get(seg.category_id, True):
            continue
        if seg.category_id in first:
            merged[seg.id] = first[seg.category_id].id
        else:
            first[seg.category_id] = seg
    if not merged:
        return ids, list(segments)
    ids = ids.copy()
    for source, target in merged.items():
        ids[ids == source] = target
    out = []
    for seg in segments:
        if seg.id in merged:
            continue
        if seg.id in {t for t in merged.values()} and seg.area is not None:
            extra = [s.area for s in segments if merged.get(s.id) == seg.id]
            seg = Segment(seg.id, seg.category_id, seg.iscrowd, None if None in extra else seg.area + sum(extra))
        out.append(seg)
    return ids, out


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Segment ids of a panoptic PNG: int64 (H, W).

    Raises:
        UnreadableFileError: a missing or undecodable file; DataError: not an RGB(A) image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("RGB", "RGBA"):
                raise DataError(f"panoptic PNG {path} is mode {image.mode}; expected RGB (id = R + 256 G + 256^2 B)")
            pixels = np.asarray(image.convert("RGB"))
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UnreadableFileError(f"cannot read panoptic PNG {path}: {reason}") from exc
    return rgb2id(pixels)


def evaluate_panoptic_files(
    gt_json: str | Path,
    pred_json: str | Path,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
    merge_stuff: bool = False,
) -> dict:
    """panopticapi's ``pq_compute`` on files: COCO panoptic ground truth vs predictions in the same format.

    Args:
        gt_json: ground-truth JSON (``annotations``, ``categories``).
        pred_json: predictions JSON (``annotations`` with ``image_id``, ``file_name``, ``segments_info``).
        gt_folder, pred_folder: PNG folders (default: the JSON path without ``.json``).
        merge_stuff: see :class:`PanopticQuality`.

    Returns:
        :meth:`PanopticQuality.compute` with the original category ids.

    Raises:
        DataError: unreadable files, a ground-truth image without prediction, or inconsistent predictions.
    """
    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_folder = Path(gt_folder) if gt_folder is not None else gt_json.with_suffix("")
    pred_folder = Path(pred_folder) if pred_folder is not None else pred_json.with_suffix("")
    truth = read_coco_panoptic(gt_json, need_images=False)
    predicted = {
        a.image_id: a for a in read_coco_panoptic_results(pred_json, {c.id for c in truth.categories}).annotations
    }
    categories = {c.id: c.isthing for c in truth.categories}
    meter = PanopticQuality(categories, {c.id: c.name for c in truth.categories}, merge_stuff)
    for gt_ann in truth.annotations:
        if gt_ann.image_id not in predicted:
            raise DataError(f"{pred_json}: no prediction for the image with id {gt_ann.image_id!r}")
        pred_ann = predicted[gt_ann.image_id]
        meter.update(
            read_panoptic_png(gt_folder / gt_ann.png_name),
            [Segment(s.id, s.category_id, s.iscrowd, s.area) for s in gt_ann.segments],
            read_panoptic_png(pred_folder / pred_ann.png_name),
            [Segment(s.id, s.category_id) for s in pred_ann.segments],
            gt_ann.image_id,
        )
    return meter.compute()


def segment_bbox(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, width, height]`` of a bool (H, W) mask (zeros when empty)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def write_panoptic_png(path: str | Path, ids: np.ndarray) -> Path:
    """Save int (H, W) segment ids as a panoptic RGB PNG (atomically)."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(id2rgb(np.asarray(ids))).save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def write_panoptic_results(
    json_path: str | Path,
    predictions: Iterable[tuple[int | str, str, np.ndarray, Sequence[Mapping]]],
    categories: Sequence[Mapping] | None = None,
    png_folder: str | Path | None = None,
) -> Path:
    """Write predictions in panopticapi's format: one PNG per image and a JSON with their ``segments_info``.

    Args:
        json_path: the JSON to write (atomically, after every PNG).
        predictions: per image ``(image_id, png_file_name, ids int (H, W), segments)``; each segment a mapping with
            ``id`` and ``category_id`` (original ids) and optional extras (``score``, ``isthing``) kept as given;
            ``area``, ``bbox`` and ``iscrowd`` (0) are filled in from the ids.
        categories: written as the JSON's ``categories`` when given.
        png_folder: folder of the PNGs (default: ``json_path`` without ``.json``).

    Returns:
        The JSON path.
    """
    json_path = Path(json_path)
    folder = Path(png_folder) if png_folder is not None else json_path.with_suffix("")
    annotations = []
    for image_id, file_name, ids, segments in predictions:
        ids = np.asarray(ids, dtype=np.int64)
        write_panoptic_png(folder / file_name, ids)
        info = []
        for seg in segments:
            mask = ids == int(seg["id"])
            extra = {"area": int(mask.sum()), "bbox": segment_bbox(mask), "iscrowd": 0}
            info.append({**dict(seg), **extra, "id": int(seg["id"]), "category_id": int(seg["category_id"])})
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": info})
    data: dict = {"annotations": annotations}
    if categories is not None:
        data["categories"] = [dict(c) for c in categories]
    atomic_write_bytes(json_path, json.dumps(data).encode())
    return json_path
