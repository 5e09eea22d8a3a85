"""Detection inference from a trained checkpoint or an exported ONNX graph, and ``vfm detect predict``: a COCO
results JSON (original category ids) plus one image with drawn boxes per readable input."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from vfmkit.data.box_transforms import resize_with_boxes
from vfmkit.data.palette import default_colors
from vfmkit.data.prediction_images import PredictionImage, decoded_batches, image_entry, write_images_json
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.engine.taskdef import PredictResult, Trained
from vfmkit.errors import VfmError
from vfmkit.tasks.detect.postprocess import postprocess_detections, to_coco_results
from vfmkit.utils.atomic import atomic_write_text, save_image_atomically

Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``boxes`` (B, K, 4) float xyxy pixels of the original images, ``scores`` (B, K) in [0, 1], ``labels`` (B, K)
int64 original category ids."""


@dataclass
class DetectRunner:
    """A detector ready to run on images of any size.

    Attributes:
        detect: ``(images (B, 3, R, R) float RGB in [0, 1], orig_sizes (B, 2) int64 (height, width)) ->``
            :data:`Detections`.
        class_names: name per contiguous label; category_ids: the original id per label.
        resolution: R, the square input side.
    """

    detect: Callable[[torch.Tensor, torch.Tensor], Detections]
    class_names: list[str]
    category_ids: list[int]
    resolution: int

    @classmethod
    def from_trained(cls, trained: Trained) -> DetectRunner:
        model = trained.model.eval()
        ids = torch.tensor(trained.meta["category_ids"], dtype=torch.int64)

        @torch.inference_mode()
        def detect(images: torch.Tensor, orig_sizes: torch.Tensor) -> Detections:
            out = model(images)
            return postprocess_detections(
                out["pred_logits"], out["pred_boxes"], orig_sizes, model.config.num_select, ids
            )

        meta = trained.meta
        return cls(detect, list(meta["classes"]), list(meta["category_ids"]), trained.spec.model.resolution)

    @classmethod
    def from_onnx(cls, path: Path) -> DetectRunner:
        """A runner over an exported graph (raw ``pred_logits`` / ``pred_boxes``, post-processed here, or the
        graph's own ``boxes`` / ``scores`` / ``labels`` when it was exported with ``export.postprocess``)."""
        from vfmkit.export.runtime import OnnxModel

        model = OnnxModel(path)
        meta = model.metadata
        names, ids = meta.get("labels"), meta.get("category_ids")
        if meta.get("task") != "detect" or not isinstance(names, list) or not isinstance(ids, list):
            raise VfmError(f"{path}: not a vfm detect export (no task/labels/category_ids in its ONNX metadata)")
        resolution = int(meta.get("resolution", 0)) or model.input_size[0]
        num_select = int(meta.get("num_select", 300))
        category_ids = torch.tensor(ids, dtype=torch.int64)

        def detect(images: torch.Tensor, orig_sizes: torch.Tensor) -> Detections:
            if "boxes" in model.output_names:
                out = model(images, orig_sizes)
                return tuple(torch.from_numpy(out[name]) for name in ("boxes", "scores", "labels"))
            out = model(images)
            logits, boxes = torch.from_numpy(out["pred_logits"]), torch.from_numpy(out["pred_boxes"])
            return postprocess_detections(logits, boxes, orig_sizes, num_select, category_ids)

        return cls(detect, list(names), list(ids), resolution)

    def class_name(self, category_id: int) -> str:
        return self.class_names[self.category_ids.index(int(category_id))]


def predict_images(
    runner: DetectRunner, images: Sequence[PredictionImage], out: Path, conf_threshold: float, batch_size: int
) -> PredictResult:
    """Detect on every image of ``images`` (:func:`vfmkit.data.prediction_images.prediction_images`: ids from the
    annotation file predicted over, else 1..N in the source's order).

    Writes ``out/results.json`` (COCO results: ``image_id``, ``category_id`` (original id), ``bbox`` [x, y, w, h]
    pixels, ``score`` >= ``conf_threshold``; plus the ``file_name``), ``out/images.json`` (the COCO ``images`` entries
    of the predicted images) and ``out/drawn/<name>.png`` per input.

    Returns:
        ``written`` = the number of images predicted (one drawn image each); unreadable inputs in ``skipped``.
    """
    results, entries, skipped = [], [], []
    for batch in decoded_batches(images, batch_size, skipped):
        detections = _detect_batch(runner, [picture for _, picture in batch])
        for (image, picture), boxes, scores, labels in zip(batch, *detections, strict=True):
            found = to_coco_results(boxes[None], scores[None], labels[None], [image.id], conf_threshold)
            results += [{**r, "file_name": image.file_name} for r in found]
            entries.append(image_entry(image, picture.width, picture.height))
            save_image_atomically(draw_detections(picture, found, runner), out / "drawn" / f"{image.path.stem}.png")
    if entries:
        atomic_write_text(out / "results.json", json.dumps(results))
        write_images_json(out, entries)
        print(
            f"predicted {len(entries)} image(s): {len(results)} detections with score >= {conf_threshold:g} in "
            f"{out / 'results.json'}, drawn boxes in {out / 'drawn'}"
        )
    return PredictResult(out, len(entries), skipped)


def _detect_batch(runner: DetectRunner, images: Sequence[Image.Image]) -> Detections:
    """Resize every image to the runner's square input and detect; boxes in each image's own pixels."""
    size = (runner.resolution, runner.resolution)
    tensors = [resize_with_boxes(pil_to_tensor(image), torch.zeros(0, 4), size)[0] for image in images]
    orig_sizes = torch.tensor([[image.height, image.width] for image in images], dtype=torch.int64)
    return runner.detect(torch.stack(tensors), orig_sizes)


def draw_detections(image: Image.Image, results: Sequence[dict], runner: DetectRunner) -> Image.Image:
    """A copy of ``image`` with each COCO result's box and ``name score`` label in its class colour."""
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    colours = default_colors(len(runner.category_ids) + 1)[1:]  # colour 0 is black
    width = max(1, round(max(image.size) / 300))
    for result in sorted(results, key=lambda r: r["score"]):
        x, y, w, h = result["bbox"]
        label = runner.category_ids.index(int(result["category_id"]))
        colour = tuple(int(c) for c in colours[label])
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
        text = f"{runner.class_name(result['category_id'])} {result['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x, y), text)
        draw.rectangle([left, top - (bottom - top), right, top], fill=colour)
        draw.text((x, y - (bottom - top)), text, fill=(255, 255, 255))
    return drawn
