"""The classify task definition: what image classification adds to the engine's skeletons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.engine.plots import plot_confusion_matrix
from vfmkit.engine.runs import make_eval_loader, make_loader
from vfmkit.engine.taskdef import ExportPlan, PredictResult, TaskData, TaskDef, Trained, format_metric
from vfmkit.errors import DataError, VfmError
from vfmkit.tasks.classify.data import ClassificationDataset, ClassificationSplit, FeatureDataset, load_split
from vfmkit.tasks.classify.features import cached_summaries
from vfmkit.tasks.classify.metrics import MetricAccumulator
from vfmkit.tasks.classify.model import ExportableClassifier, build_classifier
from vfmkit.tasks.classify.module import ClassifyModule
from vfmkit.tasks.classify.predict import Predictor, predict_csv
from vfmkit.tasks.classify.preflight import preflight
from vfmkit.tasks.classify.spec import ClassifySpec
from vfmkit.utils.tensor_cache import CacheStats


class ClassifyTask(TaskDef):
    """Image classification: a linear head on a backbone's summary (linear probe, partial or full fine-tuning)."""

    name = "classify"
    spec_class = ClassifySpec
    monitor = "val/top1"
    backbone_path = "backbone"
    metric_notes = {"top1": "no images in the split"}

    def headline_keys(self, spec: ClassifySpec) -> tuple[str, ...]:
        return ("top1", f"top{spec.top_k}", "loss", "images")

    def prepare(self, spec: ClassifySpec, splits) -> TaskData:
        report = preflight(spec.dataset, tuple(splits))
        print(report.format())
        counts = {name: len(split) for name, split in report.splits.items() if split is not None}
        summary = {"classes": ", ".join(report.classes), "images per split": counts, "mode": spec.model.mode}
        return TaskData(dict(report.splits), {"classes": list(report.classes)}, summary)

    def build_model(self, spec: ClassifySpec, meta: dict[str, Any], pretrained: bool):
        return build_classifier(spec, meta, pretrained)

    def loaders(self, spec: ClassifySpec, data: TaskData, model) -> tuple[DataLoader, DataLoader | None]:
        train, val = data.split("train"), data.split("val")
        val = val if val is not None and len(val) else None
        if spec.model.mode == "linear_probe":
            return _feature_loaders(spec, model.backbone, train, val)
        res, batch, workers, seed = (
            spec.model.resolution,
            spec.train.batch_size,
            spec.train.num_workers,
            spec.train.seed,
        )
        train_set = ClassificationDataset(train, res, train=True, augment=spec.dataset.augment, seed=seed)
        sampler = EpochSeededSampler(len(train_set), seed, dataset=train_set)
        train_loader = make_loader(train_set, batch, workers, sampler, seed=seed)
        val_loader = make_loader(ClassificationDataset(val, res), batch, workers, seed=seed) if val else None
        return train_loader, val_loader

    def lightning_module(self, spec: ClassifySpec, model, meta: dict[str, Any]) -> ClassifyModule:
        return ClassifyModule(model, spec, meta, self)

    def check_init_from(self, spec: ClassifySpec, trained: Trained, meta: dict[str, Any]) -> None:
        if len(trained.meta["classes"]) != len(meta["classes"]):
            raise VfmError(
                f"train.init_from {trained.checkpoint}: it has {len(trained.meta['classes'])} classes, "
                f"this dataset {len(meta['classes'])}"
            )

    def eval_split(self, spec: ClassifySpec, trained: Trained, split: str) -> ClassificationSplit:
        report = preflight(spec.dataset, (split,), classes=trained.meta["classes"])
        found = report.split(split)
        if found is None or len(found) == 0:
            raise DataError(f"dataset split {split!r} has no images (evaluate.split)")
        return found

    @torch.inference_mode()
    def evaluate_split(self, trained: Trained, split: ClassificationSplit, spec: ClassifySpec) -> dict:
        classes = trained.meta["classes"]
        accumulator = MetricAccumulator(len(classes), trained.spec.top_k)
        dataset = ClassificationDataset(split, trained.spec.model.resolution)
        loader = make_eval_loader(dataset, spec.evaluate.batch_size)
        trained.model.eval()
        for images, labels, _ in loader:
            accumulator.update(trained.model(images), labels)
        return accumulator.compute().as_dict(classes)

    def write_plots(self, out_dir: Path, metrics: dict, trained: Trained, title: str) -> list[Path]:
        matrix = metrics["confusion_matrix"]
        return [plot_confusion_matrix(matrix, trained.meta["classes"], out_dir / "confusion_matrix.png", title)]

    def metric_lines(self, split_name: str, metrics: dict, trained: Trained) -> list[str]:
        k = trained.spec.top_k
        lines = [
            f"{split_name}: {metrics['images']} images  top-1 {format_metric('top1', metrics['top1'])}  "
            f"top-{k} {format_metric('topk', metrics.get(f'top{k}'))}"
        ]
        for name, accuracy in metrics["per_class_accuracy"].items():
            lines.append(f"  {name}: {format_metric('accuracy', accuracy)}")
        return lines

    def predictor(self, trained: Trained) -> Predictor:
        return Predictor.from_trained(trained)

    def onnx_predictor(self, path: Path) -> Predictor:
        return Predictor.from_onnx(path)

    def predict(self, spec: ClassifySpec, predictor: Predictor, out: Path | None, default_out: Path) -> PredictResult:
        if spec.predict.source is None:
            raise VfmError("predict.source (image folder, glob pattern or list file) is required")
        return predict_csv(
            predictor, spec.predict.source, out or default_out / "predictions.csv", spec.predict.batch_size, spec.top_k
        )

    def export_plan(self, trained: Trained, resolution: int) -> ExportPlan:
        metadata = {
            "labels": json.dumps(trained.meta["classes"]),
            "input": f"image: float32 (batch, 3, {resolution}, {resolution}) RGB in [0, 1], resized (bilinear, "
            "antialiased); mean/std are applied inside the model",
            "outputs": "logits: float32 (batch, num_classes); probs: softmax of logits",
        }
        example = (torch.rand(2, 3, resolution, resolution),)
        return ExportPlan(ExportableClassifier(trained.model).eval(), example, ["image"], ["logits", "probs"], metadata)

    def verification_inputs(self, spec: ClassifySpec, trained: Trained, resolution: int, count: int = 4):
        for name in ("val", "train"):
            try:
                split = load_split(spec.dataset, name, trained.meta["classes"])
            except DataError as err:
                raise VfmError(
                    f"export verification needs real images from the dataset: {err}; fix dataset.* or "
                    "set export.verify=false"
                ) from None
            if split is not None and len(split):
                dataset = ClassificationDataset(split, resolution)
                step = max(1, len(dataset) // count)
                return (torch.stack([dataset[i][0] for i in range(0, len(dataset), step)][:count]),)
        raise VfmError("export verification found no images in the val or train split; set export.verify=false")

    def card_notes(self, spec: ClassifySpec, meta: dict[str, Any]) -> list[str]:
        return [
            f"image classification into the {len(meta['classes'])} classes above, inputs resized to "
            f"{spec.model.resolution}x{spec.model.resolution}"
        ]


def _feature_loaders(spec: ClassifySpec, backbone, train: ClassificationSplit, val: ClassificationSplit | None):
    """Loaders over cached backbone summaries (computed once, reused by every epoch and later runs)."""
    cache = spec.results_dir / ".cache" / "features"
    res, batch, workers = spec.model.resolution, spec.train.batch_size, spec.train.num_workers
    runner = _feature_runner(spec, backbone)
    loaders, stats = [], CacheStats()
    for split in (train, val):
        if split is None:
            loaders.append(None)
            continue
        summaries, hit = cached_summaries(backbone, split, res, cache, batch, workers, runner=runner, stats=stats)
        print(f"{split.name}: {len(split)} summaries {'from the cache' if hit else 'computed and cached'} ({cache})")
        dataset = FeatureDataset(summaries, split.labels)
        sampler = EpochSeededSampler(len(dataset), spec.train.seed) if split is train else None
        loaders.append(make_loader(dataset, batch, 0, sampler))
    if stats.damaged:
        print(stats.describe("feature cache"))
    return loaders[0], loaders[1]


def _feature_runner(spec: ClassifySpec, backbone):
    """None (the PyTorch backbone computes the cached features) or the onnxruntime runner ``model.feature_runtime``
    names; its ``cache_tag`` joins the feature-cache key."""
    if spec.model.feature_runtime == "torch":
        return None
    from vfmkit.features.runners import RuntimeOptions, make_runner

    return make_runner(backbone, spec.model.backbone, RuntimeOptions("onnxruntime", spec.model.feature_int8))


TASK = ClassifyTask()
