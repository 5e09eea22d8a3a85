"""``vfm segment train``: preflight, backbone + neck + SegFormer head, joint-augmented data, Lightning fit, a final
full-resolution evaluation and the model card."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from vfmkit.data.dense_augment import collate_dense
from vfmkit.data.palette import Palette
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.data.segmentation import SegmentationDataset, SegmentationSplit, preflight_segmentation
from vfmkit.engine.model_card import write_model_card
from vfmkit.engine.plots import plot_confusion_matrix
from vfmkit.engine.resume import find_checkpoint
from vfmkit.engine.run_dir import atomic_write_text, spec_hash
from vfmkit.engine.runs import copy_trained_weights, fit, prepare_run
from vfmkit.errors import DataError
from vfmkit.spec.segment import SegmentSpec
from vfmkit.tasks.dense_metrics import SegmentationMeter
from vfmkit.tasks.segment.checkpoint import build_segmenter, load_trained_segmenter
from vfmkit.tasks.segment.infer import predict_logits
from vfmkit.tasks.segment.model import Segmenter
from vfmkit.tasks.segment.module import SegmentModule


@dataclass
class SegmentTrainResult:
    """Where a segmentation run went and its full-resolution validation metrics (None without a val split)."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    val: dict | None


def _loaders(spec: SegmentSpec, palette: Palette, train: SegmentationSplit, val: SegmentationSplit | None):
    res, batch, workers, seed = spec.model.resolution, spec.train.batch_size, spec.train.num_workers, spec.train.seed
    train_set = SegmentationDataset(train, palette, res, train=True, augment=spec.dataset.augment, seed=seed)
    sampler = EpochSeededSampler(len(train_set), seed, dataset=train_set)
    kwargs = {"num_workers": workers, "persistent_workers": workers > 0, "collate_fn": collate_dense}
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch, sampler=sampler, **kwargs)
    if val is None:
        return train_loader, None
    val_set = SegmentationDataset(val, palette, res, mask_size="resized")
    return train_loader, torch.utils.data.DataLoader(val_set, batch_size=batch, **kwargs)


def train(spec: SegmentSpec) -> SegmentTrainResult:
    """Train a segmenter as the spec says; everything goes into a run folder."""
    report = preflight_segmentation(spec.dataset, ("train", "val"))
    print(report.format())
    if report.split("train") is None:
        raise DataError(
            f"dataset.root {spec.dataset.root}: no training split ({spec.dataset.images_dir}/"
            f"{spec.dataset.train_split})"
        )
    pl.seed_everything(spec.train.seed, workers=True, verbose=False)
    palette, val_split = report.palette, report.split("val")
    segmenter = build_segmenter(spec, palette.num_classes)
    if spec.train.init_from is not None:
        trained = load_trained_segmenter(find_checkpoint(spec.train.init_from))
        copy_trained_weights(segmenter, trained.segmenter, spec.train.init_from)
    # the run folder is created once the model is built: a bad backbone or checkpoint leaves nothing behind
    run_dir, resume_from = prepare_run(spec, "segment")
    print(f"run folder: {run_dir}")
    train_loader, val_loader = _loaders(spec, palette, report.split("train"), val_split)
    module = SegmentModule(segmenter, spec, palette.names)
    checkpoints = fit(spec, run_dir, module, train_loader, val_loader, resume_from, "val/miou")
    val = None
    if val_split is not None and len(val_split):
        trained = load_trained_segmenter(checkpoints.best_path)
        val = evaluate_segmenter(trained.segmenter, val_split, palette, spec, run_dir / "evaluate" / "val")
    _write_card(spec, run_dir, report, val)
    print(f"done: {run_dir}" + (f"  val mIoU {100 * val['miou']:.2f}%" if val else ""))
    return SegmentTrainResult(run_dir, checkpoints.best_path, checkpoints.last_path, val)


@torch.inference_mode()
def evaluate_segmenter(
    segmenter: Segmenter, split: SegmentationSplit, palette: Palette, spec: SegmentSpec, out_dir: Path
) -> dict:
    """Full-resolution metrics (resize or sliding-window inference as ``spec.inference`` says) of a split, written
    to ``out_dir/metrics.json`` and ``confusion_matrix.png``."""
    meter = SegmentationMeter(palette.num_classes, palette.ignore_index)
    dataset = SegmentationDataset(split, palette, None)
    segmenter.eval()
    for index in range(len(dataset)):
        image, mask, _ = dataset[index]
        logits = predict_logits(segmenter, image.unsqueeze(0), spec.model.resolution, spec.inference)
        meter.update(logits, mask.unsqueeze(0))
    metrics = meter.as_dict(palette.names)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    plot_confusion_matrix(
        np.asarray(metrics["confusion"]), palette.names, out_dir / "confusion_matrix.png", f"{split.name}: pixels"
    )
    _print_metrics(split.name, metrics, palette.names)
    return metrics


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _print_metrics(name: str, metrics: dict, classes: list[str]) -> None:
    print(f"{name}: mIoU {_percent(metrics['miou'])}%  pixel accuracy {_percent(metrics['pixel_accuracy'])}%")
    width = max(len(c) for c in classes)
    print(f"  {'class'.ljust(width)}    IoU  precision  recall     F1")
    for i, cls in enumerate(classes):
        row = [_percent(metrics[k][i]) for k in ("iou", "precision", "recall", "f1")]
        print(f"  {cls.ljust(width)} {row[0]:>6} {row[1]:>10} {row[2]:>7} {row[3]:>6}")


def _write_card(spec: SegmentSpec, run_dir: Path, report, val: dict | None) -> None:
    images = {name: len(split) for name, split in report.splits.items() if split is not None}
    metrics = {"mIoU (%)": _percent(val["miou"]), "pixel accuracy (%)": _percent(val["pixel_accuracy"])} if val else {}
    write_model_card(
        run_dir,
        "segment",
        spec.model.backbone,
        spec.model.pretrained,
        {
            "classes": ", ".join(report.palette.names),
            "images per split": images,
            "neck": spec.model.neck,
            "backbone frozen": spec.model.freeze_backbone,
        },
        metrics or {"validation": "none (no val split)"},
        spec_hash(spec),
        [
            f"semantic segmentation into the {report.palette.num_classes} classes above; trained on "
            f"{spec.model.resolution}px crops, inference mode '{spec.inference.mode}'"
        ],
    )
