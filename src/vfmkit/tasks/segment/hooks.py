"""The segment task definition: semantic segmentation with a SegFormer head on a ViT-Adapter or simple pyramid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vfmkit.data.dense_augment import collate_dense
from vfmkit.data.images import list_image_files, load_image_rgb
from vfmkit.data.palette import Palette, colorize, overlay
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.engine.plots import plot_confusion_matrix
from vfmkit.engine.runs import make_loader
from vfmkit.engine.taskdef import ExportPlan, PredictResult, TaskData, TaskDef, Trained, format_metric
from vfmkit.errors import DataError, VfmError
from vfmkit.metrics.dense import SegmentationMeter
from vfmkit.tasks.segment.data import SegmentationDataset, SegmentationSplit, load_segment_split, preflight_segmentation
from vfmkit.tasks.segment.infer import SegmentRunner
from vfmkit.tasks.segment.model import ExportableSegmenter, build_segmenter
from vfmkit.tasks.segment.module import SegmentModule
from vfmkit.tasks.segment.spec import SegmentSpec
from vfmkit.utils.atomic import save_image_atomically


class SegmentTask(TaskDef):
    """Semantic segmentation into a palette's classes; metrics at the masks' full resolution."""

    name = "segment"
    spec_class = SegmentSpec
    monitor = "val/miou"
    headline = ("miou", "pixel_accuracy")
    backbone_path = "neck.backbone"
    metric_notes = {"miou": "no class is present in the targets or predictions of the split"}

    def prepare(self, spec: SegmentSpec, splits) -> TaskData:
        report = preflight_segmentation(spec.dataset, tuple(splits))
        print(report.format())
        if "train" in report.splits and report.split("train") is None:
            raise DataError(
                f"dataset.root {spec.dataset.root}: no training split ({spec.dataset.images_dir}/"
                f"{spec.dataset.train_split})"
            )
        images = {name: len(split) for name, split in report.splits.items() if split is not None}
        summary = {
            "classes": ", ".join(report.palette.names),
            "images per split": images,
            "neck": spec.model.neck,
            "backbone frozen": spec.model.freeze_backbone,
        }
        return TaskData(dict(report.splits), {"classes": list(report.palette.names)}, summary)

    def build_model(self, spec: SegmentSpec, meta: dict[str, Any], pretrained: bool):
        return build_segmenter(spec, meta, pretrained)

    def loaders(self, spec: SegmentSpec, data: TaskData, model):
        palette = Palette.from_spec(spec.dataset)
        res, batch, workers, seed = (
            spec.model.resolution,
            spec.train.batch_size,
            spec.train.num_workers,
            spec.train.seed,
        )
        train_set = SegmentationDataset(
            data.split("train"), palette, res, train=True, augment=spec.dataset.augment, seed=seed
        )
        sampler = EpochSeededSampler(len(train_set), seed, dataset=train_set)
        train_loader = make_loader(train_set, batch, workers, sampler, seed, collate_dense)
        val = data.split("val")
        if val is None or not len(val):
            return train_loader, None
        val_set = SegmentationDataset(val, palette, res, mask_size="resized")
        return train_loader, make_loader(val_set, batch, workers, None, seed, collate_dense)

    def lightning_module(self, spec: SegmentSpec, model, meta: dict[str, Any]) -> SegmentModule:
        return SegmentModule(model, spec, meta, self)

    def check_init_from(self, spec: SegmentSpec, trained: Trained, meta: dict[str, Any]) -> None:
        if len(trained.meta["classes"]) != len(meta["classes"]):
            raise VfmError(
                f"train.init_from {trained.checkpoint}: it has {len(trained.meta['classes'])} classes, "
                f"this palette {len(meta['classes'])}"
            )

    def eval_split(self, spec: SegmentSpec, trained: Trained, split: str) -> SegmentationSplit:
        found = preflight_segmentation(spec.dataset, (split,)).split(split)  # unreadable pairs left out and listed
        if found is None or not len(found):
            raise DataError(f"dataset split {split!r} has no images under {spec.dataset.root}")
        return found

    @torch.inference_mode()
    def evaluate_split(self, trained: Trained, split: SegmentationSplit, spec: SegmentSpec) -> dict:
        """Full-resolution metrics: resize or sliding-window inference as ``spec.inference`` says."""
        runner = SegmentRunner.from_trained(trained)
        meter = SegmentationMeter(len(runner.classes), runner.palette.ignore_index)
        dataset = SegmentationDataset(split, runner.palette, None)
        for index in range(len(dataset)):
            image, mask, _ = dataset[index]
            meter.update(runner.logits(image.unsqueeze(0), spec.inference), mask.unsqueeze(0))
        return meter.as_dict(runner.classes)

    def write_plots(self, out_dir: Path, metrics: dict, trained: Trained, title: str) -> list[Path]:
        matrix = np.asarray(metrics["confusion"])
        return [plot_confusion_matrix(matrix, trained.meta["classes"], out_dir / "confusion_matrix.png", title)]

    def metric_lines(self, split_name: str, metrics: dict, trained: Trained) -> list[str]:
        classes = trained.meta["classes"]
        lines = [
            f"{split_name}: mIoU {format_metric('miou', metrics['miou'])}  pixel accuracy "
            f"{format_metric('pixel_accuracy', metrics['pixel_accuracy'])}"
        ]
        width = max(len(c) for c in classes)
        lines.append(f"  {'class'.ljust(width)}      IoU  precision   recall       F1")
        for i, cls in enumerate(classes):
            row = [format_metric("iou", metrics[k][i]) for k in ("iou", "precision", "recall", "f1")]
            lines.append(f"  {cls.ljust(width)} {row[0]:>8} {row[1]:>10} {row[2]:>8} {row[3]:>8}")
        return lines

    def predictor(self, trained: Trained) -> SegmentRunner:
        return SegmentRunner.from_trained(trained)

    def onnx_predictor(self, path: Path) -> SegmentRunner:
        return SegmentRunner.from_onnx(path)

    def predict(self, spec: SegmentSpec, runner: SegmentRunner, out: Path | None, default_out: Path) -> PredictResult:
        """Index masks (PNG, pixel = class index) and colour overlays for every image of ``predict.source``."""
        if spec.predict.source is None:
            raise VfmError("predict.source (image folder, glob pattern or list file) is required")
        out = Path(out or default_out)
        written, skipped = 0, []
        for path in list_image_files(spec.predict.source):
            try:
                image = load_image_rgb(path)
            except DataError as err:
                skipped.append(str(err))
                continue
            logits = runner.logits(pil_to_tensor(image).unsqueeze(0), spec.inference)
            mask = logits[0].argmax(dim=0).numpy().astype(np.uint8)
            save_image_atomically(Image.fromarray(mask, mode="L"), out / "masks" / f"{path.stem}.png")
            save_image_atomically(overlay(image, mask, runner.palette), out / "overlays" / f"{path.stem}.png")
            save_image_atomically(colorize(mask, runner.palette), out / "overlays" / f"{path.stem}_mask.png")
            written += 1
        if written:
            print(f"predicted {written} image(s): masks in {out / 'masks'}, overlays in {out / 'overlays'}")
        return PredictResult(out, written, skipped)

    def export_plan(self, trained: Trained, resolution: int) -> ExportPlan:
        palette = Palette.from_spec(trained.spec.dataset)
        metadata = {
            "labels": json.dumps(trained.meta["classes"]),
            "input": f"image: float32 (batch, 3, {resolution}, {resolution}) RGB in [0, 1] (bilinear resize); "
            "mean/std inside",
            "outputs": "logits: float32 (batch, num_classes, H, W) at the input size",
            "palette": json.dumps(palette.colors.tolist()),
        }
        example = (torch.rand(2, 3, resolution, resolution),)
        return ExportPlan(ExportableSegmenter(trained.model).eval(), example, ["image"], ["logits"], metadata)

    def verification_inputs(self, spec: SegmentSpec, trained: Trained, resolution: int, count: int = 2):
        palette = Palette.from_spec(trained.spec.dataset)
        for name in ("val", "train"):
            split = load_segment_split(spec.dataset, name)
            if split is not None and len(split):
                dataset = SegmentationDataset(split, palette, resolution, mask_size="resized")
                return (torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))]),)
        raise VfmError("export verification found no images in the val or train split; set export.verify=false")

    def card_notes(self, spec: SegmentSpec, meta: dict[str, Any]) -> list[str]:
        return [
            f"semantic segmentation into the {len(meta['classes'])} classes above; trained on "
            f"{spec.model.resolution}px crops, inference mode '{spec.inference.mode}'"
        ]


TASK = SegmentTask()
