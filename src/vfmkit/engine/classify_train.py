"""``vfm classify train``: preflight, backbone + head, (cached) data, Lightning fit, final evaluation, model card."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from vfmkit.data.classification import ClassificationSplit, PreflightReport, preflight
from vfmkit.data.sampling import ClassificationDataset, EpochSeededSampler, FeatureDataset
from vfmkit.engine.model_card import write_model_card
from vfmkit.engine.plots import plot_confusion_matrix
from vfmkit.engine.resume import find_checkpoint
from vfmkit.engine.run_dir import atomic_write_text, spec_hash
from vfmkit.engine.runs import copy_trained_weights, fit, make_loader, prepare_run
from vfmkit.errors import VfmError
from vfmkit.spec.classify import ClassifySpec
from vfmkit.tasks.classify.checkpoint import build_backbone, load_trained_classifier
from vfmkit.tasks.classify.features import cached_summaries
from vfmkit.tasks.classify.metrics import ClassificationMetrics, MetricAccumulator
from vfmkit.tasks.classify.model import Classifier, set_trainable
from vfmkit.tasks.classify.module import ClassifyModule

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a training run went and how it scored on the validation split (None without one)."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    val: dict | None


def _feature_loaders(
    spec: ClassifySpec, backbone, train: ClassificationSplit, val: ClassificationSplit | None
) -> tuple[DataLoader, DataLoader | None]:
    """Loaders over cached backbone summaries (computed once, reused by every epoch and later runs)."""
    cache = spec.results_dir / ".cache" / "features"
    res, batch, workers = spec.model.resolution, spec.train.batch_size, spec.train.num_workers
    loaders = []
    for split in (train, val):
        if split is None:
            loaders.append(None)
            continue
        summaries, hit = cached_summaries(backbone, split, res, cache, batch, workers)
        print(f"{split.name}: {len(split)} summaries {'from the cache' if hit else 'computed and cached'} ({cache})")
        dataset = FeatureDataset(summaries, split.labels)
        sampler = EpochSeededSampler(len(dataset), spec.train.seed) if split is train else None
        loaders.append(make_loader(dataset, batch, 0, sampler))
    return loaders[0], loaders[1]


def _image_loaders(
    spec: ClassifySpec, train: ClassificationSplit, val: ClassificationSplit | None
) -> tuple[DataLoader, DataLoader | None]:
    res, batch, workers, seed = spec.model.resolution, spec.train.batch_size, spec.train.num_workers, spec.train.seed
    train_set = ClassificationDataset(train, res, train=True, augment=spec.dataset.augment, seed=seed)
    train_loader = make_loader(train_set, batch, workers, EpochSeededSampler(len(train_set), seed, dataset=train_set))
    val_loader = make_loader(ClassificationDataset(val, res), batch, workers) if val is not None else None
    return train_loader, val_loader


def _build_classifier(spec: ClassifySpec, num_classes: int) -> Classifier:
    backbone = build_backbone(spec)
    classifier = Classifier(backbone, num_classes, spec.model.head_dropout)
    set_trainable(classifier, spec.model.mode, spec.model.partial_blocks)
    if spec.train.activation_checkpointing and hasattr(backbone, "set_grad_checkpointing"):
        backbone.set_grad_checkpointing(True)
    if spec.train.init_from is not None:
        trained = load_trained_classifier(find_checkpoint(spec.train.init_from))
        if trained.classifier.head[2].out_features != num_classes:
            raise VfmError(
                f"train.init_from {spec.train.init_from}: it has {len(trained.classes)} classes, "
                f"this dataset {num_classes}"
            )
        copy_trained_weights(classifier, trained.classifier, spec.train.init_from)
    return classifier


def train(spec: ClassifySpec) -> TrainResult:
    """Train a classifier as the spec says; everything goes into a run folder (see README)."""
    report = preflight(spec.dataset, ("train", "val"))
    print(report.format())
    pl.seed_everything(spec.train.seed, workers=True, verbose=False)
    train_split, val_split = report.split("train"), report.split("val")
    classifier = _build_classifier(spec, len(report.classes))
    # the run folder is created once the model is built: a bad backbone or checkpoint leaves nothing behind
    run_dir, resume_from = prepare_run(spec, "classify")
    print(f"run folder: {run_dir}")
    on_features = spec.model.mode == "linear_probe"
    if on_features:
        train_loader, val_loader = _feature_loaders(spec, classifier.backbone, train_split, val_split)
    else:
        train_loader, val_loader = _image_loaders(spec, train_split, val_split)
    module = ClassifyModule(classifier, spec, report.classes, on_features=on_features)
    checkpoints = fit(spec, run_dir, module, train_loader, val_loader, resume_from, "val/top1")
    val = _final_evaluation(spec, run_dir, checkpoints.best_path, val_split, report) if val_split else None
    _write_card(spec, run_dir, report, val)
    print(f"done: {run_dir}" + (f"  val top-1 {val['top1']:.2f}%" if val else ""))
    return TrainResult(run_dir, checkpoints.best_path, checkpoints.last_path, val)


@torch.inference_mode()
def evaluate_split(
    classifier: Classifier, split: ClassificationSplit, resolution: int, batch_size: int, k: int, workers: int = 0
) -> ClassificationMetrics:
    """Metrics of the full classifier (backbone + head) on a split's images."""
    accumulator = MetricAccumulator(len(classifier.head[2].weight), k)
    loader = make_loader(ClassificationDataset(split, resolution), batch_size, workers)
    classifier.eval()
    for images, labels, _ in loader:
        accumulator.update(classifier(images), labels)
    return accumulator.compute()


def write_metrics(out_dir: Path, metrics: ClassificationMetrics, classes: list[str], title: str) -> dict:
    """``metrics.json`` and ``confusion_matrix.png`` in ``out_dir``; returns the metrics dict."""
    data = metrics.as_dict(classes)
    atomic_write_text(out_dir / "metrics.json", json.dumps(data, indent=2))
    plot_confusion_matrix(metrics.confusion, classes, out_dir / "confusion_matrix.png", title)
    return data


def _final_evaluation(spec, run_dir: Path, best: Path, val: ClassificationSplit, report) -> dict:
    trained = load_trained_classifier(best)
    metrics = evaluate_split(trained.classifier, val, spec.model.resolution, spec.evaluate.batch_size, spec.top_k)
    return write_metrics(run_dir / "evaluate" / "val", metrics, report.classes, f"val, best checkpoint ({best.name})")


def _write_card(spec: ClassifySpec, run_dir: Path, report: PreflightReport, val: dict | None) -> None:
    counts = {name: len(split) for name, split in report.splits.items() if split is not None}
    metrics = {k: v for k, v in (val or {}).items() if k.startswith("top") or k in ("images", "loss")}
    write_model_card(
        run_dir,
        "classify",
        spec.model.backbone,
        spec.model.pretrained,
        {"classes": ", ".join(report.classes), "images per split": counts, "mode": spec.model.mode},
        metrics or {"validation": "none (no val split)"},
        spec_hash(spec),
        [
            f"image classification into the {len(report.classes)} classes above, inputs resized to "
            f"{spec.model.resolution}x{spec.model.resolution}"
        ],
    )
