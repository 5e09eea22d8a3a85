"""``vfm universal predict``: one task per run (``predict.task``), every readable image of ``predict.source``, results
at the image's original size with the original category ids, and an overlay per image.

- ``semantic``: ``semantic/<stem>.png``, pixel = the original category id (8-bit, 16-bit when an id is > 255);
- ``instance``: ``instances.json``, a COCO results list (``image_id``, ``file_name``, ``category_id``, ``score``,
  ``segmentation`` compressed RLE, ``bbox`` [x, y, w, h]) of the predictions scoring above
  ``predict.score_threshold``;
- ``panoptic``: ``panoptic.json`` + ``panoptic/<stem>.png`` in panopticapi's format (PNG id = R + 256 G + 256^2 B,
  ``segments_info`` with ``category_id``, ``isthing``, ``score``, ``area``, ``bbox``; the JSON lists the categories);
- ``overlays/<stem>.png``: the image with each segment / instance tinted (things: one shade per instance);
- ``images.json``: the COCO ``images`` entries of the predicted images.

Image ids follow :mod:`vfmkit.data.prediction_images`: a dataset split's annotation JSON as ``predict.source`` keeps
its ids (the results score against it), any other source numbers its images 1..N in listing order.

``predict.checkpoint`` is a run folder, a ``.ckpt`` file or a ``vfm universal export`` ``.onnx`` graph (run by
onnxruntime with the categories and thresholds recorded in its metadata).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vfmkit.data.coco_masks import mask_to_rle
from vfmkit.data.dense_augment import eval_transform
from vfmkit.data.palette import default_colors
from vfmkit.data.prediction_images import (
    PredictionImage,
    decoded_batches,
    image_entry,
    prediction_images,
    write_images_json,
)
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.engine.taskdef import PredictResult, Trained
from vfmkit.errors import VfmError
from vfmkit.metrics.panoptic import segment_bbox, write_panoptic_results
from vfmkit.models.heads.mask2former import TASKS
from vfmkit.tasks.universal.categories import Category, CategoryTable
from vfmkit.tasks.universal.infer import task_outputs
from vfmkit.tasks.universal.postprocess import (
    instance_inference,
    panoptic_inference,
    resize_mask_logits,
    semantic_inference,
)
from vfmkit.tasks.universal.spec import UniversalDataSpec, UniversalSpec, UniversalTestSpec
from vfmkit.utils.atomic import atomic_write_text, save_image_atomically

Outputs = dict[str, torch.Tensor]
"""``pred_logits`` (B, Q, K + 1) and ``pred_masks`` (B, Q, h, w) of one task."""


@dataclass
class UniversalPredictor:
    """What predict runs: a trained model or an exported ONNX graph, with its categories, input resolution and the
    inference thresholds it was trained with.

    Attributes:
        outputs: (images float32 (B, 3, R, R) in [0, 1], task) -> :data:`Outputs`.
        categories: the model's categories (contiguous order, original ids).
        resolution: the input side R.
        test: the inference thresholds (``object_mask_threshold``, ``overlap_threshold``, ``test_topk_per_image``).
    """

    outputs: Callable[[torch.Tensor, str], Outputs]
    categories: CategoryTable
    resolution: int
    test: UniversalTestSpec

    @classmethod
    def from_trained(cls, trained: Trained) -> UniversalPredictor:
        model = trained.model.eval()

        def outputs(images: torch.Tensor, task: str) -> Outputs:
            with torch.inference_mode():
                return task_outputs(model, images, [task])[task]

        categories = CategoryTable.from_meta(trained.meta["categories"])
        return cls(outputs, categories, trained.spec.model.resolution, trained.spec.model.test)

    @classmethod
    def from_onnx(cls, path: Path) -> UniversalPredictor:
        """A predictor over a ``vfm universal export`` graph (a OneFormer graph with ``task_tokens`` gets each
        task's tokens from its metadata; a graph exported with ``export.task`` answers that task only)."""
        from vfmkit.export.runtime import OnnxModel

        graph = OnnxModel(path)
        meta = graph.metadata
        if meta.get("task") != "universal" or not all(k in meta for k in ("labels", "category_ids", "isthing")):
            raise VfmError(f"{path}: not a vfm universal export (no task/labels/category_ids in its ONNX metadata)")
        rows = zip(meta["category_ids"], meta["labels"], meta["isthing"], strict=True)
        categories = CategoryTable([Category(int(i), str(n), bool(t)) for i, n, t in rows])
        fixed = str(meta.get("segmentation_task", ""))

        def outputs(images: torch.Tensor, task: str) -> Outputs:
            if "task_tokens" in graph.input_names:
                tokens = np.asarray([meta[f"task_tokens.{task}"]] * len(images), dtype=np.int64)
                out = graph(images.numpy(), tokens)
            elif fixed in TASKS and fixed != task:
                raise VfmError(
                    f"predict.checkpoint {path}: the graph was exported for the {fixed} task (export.task); set "
                    f"predict.task={fixed}, or export without export.task"
                )
            else:
                out = graph(images.numpy())
            return {name: torch.from_numpy(out[name]) for name in ("pred_logits", "pred_masks")}

        test = UniversalTestSpec(
            object_mask_threshold=float(meta["object_mask_threshold"]),
            overlap_threshold=float(meta["overlap_threshold"]),
            test_topk_per_image=int(meta["test_topk_per_image"]),
        )
        return cls(outputs, categories, int(meta.get("resolution", 0)) or graph.input_size[0], test)

    def colors(self) -> np.ndarray:
        """uint8 (K, 3) display colours: the dataset's where given, else distinct defaults."""
        table = self.categories
        defaults = default_colors(len(table) + 1)[1:]
        return np.asarray([c.color or defaults[k] for k, c in enumerate(table.categories)], dtype=np.uint8)


def predict_universal(spec: UniversalSpec, predictor: UniversalPredictor, out: Path) -> PredictResult:
    """Predict ``spec.predict.task`` for every image of ``spec.predict.source`` into ``out`` (see the module)."""
    if spec.predict.source is None:
        raise VfmError(
            "predict.source (image folder, glob pattern, list file, or a dataset split's annotation JSON) is required"
        )
    task = spec.predict.task
    images = prediction_images(spec.predict.source, annotation_folders(spec.dataset))
    results: list = []  # instance: COCO results; panoptic: (image id, PNG name, ids, segments) per image
    entries, skipped = [], []
    for batch in decoded_batches(images, spec.predict.batch_size, skipped):
        tensors = [eval_transform([pil_to_tensor(picture)], None, predictor.resolution)[0][0] for _, picture in batch]
        outputs = predictor.outputs(torch.stack(tensors), task)
        for b, (image, picture) in enumerate(batch):
            pair = (outputs["pred_logits"][b], outputs["pred_masks"][b])
            painted, found = _predict_one(spec, predictor, image, picture, pair, out)
            results += found
            _write_png(out / "overlays" / f"{image.path.stem}.png", painted)
            entries.append(image_entry(image, picture.width, picture.height))
    if entries:
        _write_results(out, task, results, predictor.categories)
        write_images_json(out, entries)
        what = {"semantic": "semantic/", "instance": "instances.json", "panoptic": "panoptic.json + panoptic/"}[task]
        print(f"predicted {task} for {len(entries)} image(s): {out / what}, overlays in {out / 'overlays'}")
    return PredictResult(out, len(entries), skipped)


def annotation_folders(dataset: UniversalDataSpec) -> dict[Path, Path]:
    """The annotation JSON of each COCO split of the dataset -> its image folder."""
    splits = (dataset.train, dataset.val, dataset.test) if dataset.format != "semantic_masks" else ()
    return {Path(s.annotations): Path(s.images) for s in splits if s is not None}


def _predict_one(
    spec: UniversalSpec,
    predictor: UniversalPredictor,
    image: PredictionImage,
    picture: Image.Image,
    outputs: tuple[torch.Tensor, torch.Tensor],
    out: Path,
) -> tuple[Image.Image, list]:
    """One image's overlay and results: semantic writes its PNG here and returns none; instance returns its COCO
    results; panoptic its ``(image id, PNG name, ids, segments)`` entry. ``outputs`` are the model's logits
    (Q, K + 1) and mask logits (Q, h, w) for the image."""
    task, test, categories, colors = spec.predict.task, predictor.test, predictor.categories, predictor.colors()
    logits, masks = outputs[0], resize_mask_logits(outputs[1], (picture.height, picture.width))
    if task == "semantic":
        labels = semantic_inference(logits, masks).argmax(0).numpy()
        _write_png(out / "semantic" / f"{image.path.stem}.png", np.asarray(categories.original_ids)[labels])
        return _paint(picture, labels, colors), []
    if task == "instance":
        found = instance_inference(logits, masks, test.test_topk_per_image, categories.isthing)
        found = found.above(spec.predict.score_threshold)
        return _paint_instances(picture, found, colors), _instance_results(image, found, categories)
    result = panoptic_inference(logits, masks, categories.isthing, test.object_mask_threshold, test.overlap_threshold)
    ids = result.ids.numpy()
    segments = [_segment_info(segment, categories) for segment in result.segments]
    return _paint_segments(picture, ids, result.segments, colors), [(image.id, f"{image.path.stem}.png", ids, segments)]


def _write_results(out: Path, task: str, results: list, categories: CategoryTable) -> None:
    """``instances.json`` (instance) or ``panoptic.json`` + ``panoptic/`` (panoptic); semantic PNGs are written per
    image."""
    if task == "instance":
        atomic_write_text(out / "instances.json", json.dumps(results))
    elif task == "panoptic":
        meta = [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in categories.categories]
        write_panoptic_results(out / "panoptic.json", results, meta)


def _segment_info(segment: dict, categories: CategoryTable) -> dict:
    category = categories.categories[segment["category"]]
    return {
        "id": segment["id"],
        "category_id": category.id,
        "isthing": int(segment["isthing"]),
        "score": segment["score"],
    }


def _instance_results(image: PredictionImage, found, categories: CategoryTable) -> list[dict]:
    results = []
    for mask, score, label in zip(found.masks.numpy(), found.scores.tolist(), found.labels.tolist(), strict=True):
        results.append(
            {
                "image_id": image.id,
                "file_name": image.file_name,
                "category_id": categories.original_ids[label],
                "score": float(score),
                "segmentation": mask_to_rle(mask),
                "bbox": segment_bbox(mask),
            }
        )
    return results


def _write_png(path: Path, pixels: np.ndarray | Image.Image) -> None:
    """Save an RGB picture or an id map (8-bit when every value is < 256, else 16-bit) as a PNG, atomically."""
    if isinstance(pixels, np.ndarray):
        pixels = Image.fromarray(pixels.astype(np.uint8 if pixels.max(initial=0) < 256 else np.uint16))
    save_image_atomically(pixels, path)


def _paint(image: Image.Image, labels: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend ``colors[labels]`` over the image where ``labels`` >= 0; label borders are drawn dark."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    valid = labels >= 0
    if not valid.any():
        return image.convert("RGB")
    tint = colors[np.where(valid, labels, 0)].astype(np.float32)
    blended = np.where(valid[..., None], (1 - alpha) * pixels + alpha * tint, pixels)
    border = np.zeros_like(valid)
    border[1:, :] |= labels[1:, :] != labels[:-1, :]
    border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    blended[border] *= 0.3
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def _shades(colors: np.ndarray, categories: list[int]) -> np.ndarray:
    """One colour per instance: its category's colour mixed with a distinct colour per instance."""
    distinct = default_colors(len(categories) + 1)[1:].astype(np.float32)
    base = colors[np.asarray(categories, dtype=np.int64)].astype(np.float32) if categories else distinct
    return (0.65 * base + 0.35 * distinct).astype(np.uint8).reshape(-1, 3)


def _paint_segments(image: Image.Image, ids: np.ndarray, segments: list[dict], colors: np.ndarray) -> Image.Image:
    labels = np.full(ids.shape, -1, dtype=np.int64)
    for k, segment in enumerate(segments):
        labels[ids == segment["id"]] = k
    shades = _shades(colors, [s["category"] for s in segments])
    stuff = [k for k, s in enumerate(segments) if not s["isthing"]]
    shades[stuff] = colors[[segments[k]["category"] for k in stuff]]
    return _paint(image, labels, shades)


def _paint_instances(image: Image.Image, found, colors: np.ndarray) -> Image.Image:
    labels = np.full((image.height, image.width), -1, dtype=np.int64)
    for k in reversed(range(len(found.scores))):  # the best-scoring instance on top
        labels[found.masks[k].numpy()] = k
    return _paint(image, labels, _shades(colors, found.labels.tolist()))
