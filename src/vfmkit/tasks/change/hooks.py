"""The change task (Visual ChangeNet): two task definitions, chosen once from ``task_type``.

- ``segment``: per-pixel change masks from image pairs (LEVIR-CD layout);
- ``classify``: golden-vs-test PASS/FAIL inspection from the 4-column CSV.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfmkit.data.dense_augment import collate_dense
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.engine.plots import plot_confusion_matrix
from vfmkit.engine.runs import make_loader
from vfmkit.engine.taskdef import ExportPlan, PredictResult, TaskData, TaskDef, Trained
from vfmkit.errors import DataError, VfmError
from vfmkit.metrics.dense import ChangeClassifyMeter, ChangeSegMeter
from vfmkit.models.necks.common import resize_to
from vfmkit.tasks.change.data import make_dataset, preflight_change, trained_layout
from vfmkit.tasks.change.model import ExportableChangeClassifier, ExportableChangeSegmenter, build_change_model
from vfmkit.tasks.change.module import ChangeClassifyModule, ChangeSegModule
from vfmkit.tasks.change.plots import best_threshold, plot_roc
from vfmkit.tasks.change.predict import predict_csv, predict_masks
from vfmkit.tasks.change.spec import ChangeSpec


class _ChangeTaskDef(TaskDef):
    """What both variants share: data, model building, loaders, the layout checks."""

    name = "change"
    spec_class = ChangeSpec
    backbone_path = "neck.backbone"
    classes: tuple[str, str]

    def prepare(self, spec: ChangeSpec, splits) -> TaskData:
        report = preflight_change(spec.dataset, tuple(splits))
        print(report.format())
        counts = {name: len(split) for name, split in report.splits.items() if split is not None}
        summary = {
            "variant": spec.task_type,
            "samples per split": counts,
            "neck": spec.model.neck,
            "backbone frozen": spec.model.freeze_backbone,
        }
        return TaskData(dict(report.splits), {"classes": list(self.classes)}, summary)

    def build_model(self, spec: ChangeSpec, meta: dict[str, Any], pretrained: bool):
        return build_change_model(spec, pretrained=pretrained)

    def loaders(self, spec: ChangeSpec, data: TaskData, model):
        batch, workers, seed = spec.train.batch_size, spec.train.num_workers, spec.train.seed
        train_set = make_dataset(spec, data.split("train"), train=True)
        sampler = EpochSeededSampler(len(train_set), seed, dataset=train_set)
        train_loader = make_loader(train_set, batch, workers, sampler, seed, collate_dense)
        val = data.split("val")
        if val is None or not len(val):
            return train_loader, None
        return train_loader, make_loader(
            make_dataset(spec, val, train=False), batch, workers, None, seed, collate_dense
        )

    def check_compatible(self, spec: ChangeSpec, trained: Trained) -> None:
        if spec.task_type != trained.spec.task_type:
            raise VfmError(
                f"{trained.checkpoint} is a {trained.spec.task_type} model but this spec's task_type is "
                f"{spec.task_type!r}"
            )

    def eval_split(self, spec: ChangeSpec, trained: Trained, split: str):
        found = preflight_change(trained_layout(spec, trained), (split,)).split(split)
        if found is None or len(found) == 0:
            raise DataError(f"dataset split {split!r} has no samples (evaluate.split)")
        return found

    def verification_inputs(self, spec: ChangeSpec, trained: Trained, resolution: int, count: int = 4):
        try:
            report = preflight_change(trained_layout(spec, trained), ("val", "train"))
        except DataError as err:
            raise VfmError(
                f"export verification needs real samples from the dataset: {err}; fix dataset.* or set "
                "export.verify=false"
            ) from None
        for name in ("val", "train"):
            split = report.split(name)
            if split is not None and len(split):
                dataset = make_dataset(trained.spec, split, train=False, resolution=resolution)
                step = max(1, len(dataset) // count)
                items = [dataset[i] for i in range(0, len(dataset), step)][:count]
                return torch.stack([item[0] for item in items]), torch.stack([item[1] for item in items])
        raise VfmError("export verification found no samples in the val or train split; set export.verify=false")

    def check_export_resolution(self, trained: Trained, resolution: int) -> None:
        if resolution % 32:
            raise VfmError(f"export.resolution must be a multiple of 32 (pyramid stride), got {resolution}")


class ChangeSegmentTask(_ChangeTaskDef):
    """Binary change segmentation of co-registered image pairs."""

    variant = "segment"
    classes = ("unchanged", "changed")
    monitor = "val/change_f1"
    headline = ("change_f1", "change_iou", "change_precision", "change_recall", "overall_accuracy", "miou")
    metric_notes = {
        "change_f1": "no changed pixel in the targets or the predictions",
        "change_precision": "no pixel was predicted changed",
        "change_recall": "no changed pixel in the targets",
        "change_iou": "no changed pixel in the targets or the predictions",
    }

    def lightning_module(self, spec: ChangeSpec, model, meta: dict[str, Any]) -> ChangeSegModule:
        return ChangeSegModule(model, spec, meta, self)

    @torch.inference_mode()
    def evaluate_split(self, trained: Trained, split, spec: ChangeSpec) -> dict:
        """Metrics at the masks' original resolution (logits bilinearly resized back)."""
        model = trained.model.eval()
        dataset = make_dataset(trained.spec, split, train=False, full_masks=True)
        loader = make_loader(dataset, spec.evaluate.batch_size, 0, collate_fn=collate_dense)
        meter = ChangeSegMeter(trained.spec.dataset.ignore_index)
        for image_a, image_b, masks, _ in loader:
            logits = model(image_a, image_b)
            for sample, mask in zip(logits, masks, strict=True):
                meter.update(resize_to(sample[None], tuple(mask.shape[-2:])), mask[None])
        metrics = meter.compute()
        metrics["class_names"] = list(self.classes)
        return metrics

    def write_plots(self, out_dir: Path, metrics: dict, trained: Trained, title: str) -> list[Path]:
        matrix = np.asarray(metrics["confusion"])
        return [plot_confusion_matrix(matrix, list(self.classes), out_dir / "confusion_matrix.png", title)]

    def predict(self, spec: ChangeSpec, trained: Trained, out: Path | None, default_out: Path) -> PredictResult:
        return predict_masks(spec, trained, Path(out or default_out))

    def export_plan(self, trained: Trained, resolution: int) -> ExportPlan:
        metadata = {
            "input": f"image_a, image_b: float32 (batch, 3, {resolution}, {resolution}) RGB in [0, 1] (bilinear, "
            "antialiased resize); mean/std are applied inside the model",
            "outputs": "change_logits: float32 (batch, 2, H, W) at the input resolution; argmax 1 = changed",
            "labels": json.dumps(list(self.classes)),
        }
        example = (torch.rand(2, 3, resolution, resolution), torch.rand(2, 3, resolution, resolution))
        module = ExportableChangeSegmenter(trained.model).eval()
        return ExportPlan(module, example, ["image_a", "image_b"], ["change_logits"], metadata)

    def card_notes(self, spec: ChangeSpec, meta: dict[str, Any]) -> list[str]:
        m = spec.model
        return [
            f"binary change segmentation of co-registered image pairs, inputs resized to {m.resolution}x"
            f"{m.resolution}; output change logits (B, 2, H, W) at the input resolution"
        ]


class ChangeClassifyTask(_ChangeTaskDef):
    """Golden-vs-test PASS/FAIL inspection (learnable difference or euclidean embedding distance)."""

    variant = "classify"
    classes = ("PASS", "FAIL")
    monitor = "val/accuracy"
    headline = ("accuracy", "defect_accuracy", "false_alarm_rate", "miss_rate", "auc")
    metric_notes = {
        "defect_accuracy": "no FAIL sample in the split",
        "miss_rate": "no FAIL sample in the split",
        "false_alarm_rate": "no PASS sample in the split",
        "auc": "the split holds only one of PASS and FAIL",
    }

    def lightning_module(self, spec: ChangeSpec, model, meta: dict[str, Any]) -> ChangeClassifyModule:
        return ChangeClassifyModule(model, spec, meta, self)

    @torch.inference_mode()
    def evaluate_split(self, trained: Trained, split, spec: ChangeSpec) -> dict:
        """Accuracy, defect accuracy, false-alarm and miss rates, AUC; the best-accuracy threshold on this split
        (information for calibration; the model's own threshold is what the metrics use); per-sample scores."""
        model = trained.model.eval()
        loader = make_loader(
            make_dataset(trained.spec, split, train=False), spec.evaluate.batch_size, 0, collate_fn=collate_dense
        )
        meter = ChangeClassifyMeter(trained.spec.threshold)
        for test, golden, labels, _ in loader:
            meter.update(model.score(test, golden), labels)
        metrics = meter.compute()
        metrics.update(best_threshold(metrics["scores"], metrics["labels"]))
        metrics["threshold"] = trained.spec.threshold
        return metrics

    def write_plots(self, out_dir: Path, metrics: dict, trained: Trained, title: str) -> list[Path]:
        scores, labels = np.asarray(metrics["scores"], dtype=np.float64), np.asarray(metrics["labels"], dtype=np.int64)
        return [plot_roc(scores, labels, out_dir / "roc.png", title)]

    def predict(self, spec: ChangeSpec, trained: Trained, out: Path | None, default_out: Path) -> PredictResult:
        return predict_csv(spec, trained, Path(out or default_out))

    def export_plan(self, trained: Trained, resolution: int) -> ExportPlan:
        spec = trained.spec
        lights = spec.dataset.light_conditions
        channels, goldens = 3 * len(lights), spec.dataset.num_golden
        golden_shape = (
            (2, channels, resolution, resolution) if goldens == 1 else (2, goldens, channels, resolution, resolution)
        )
        metadata = {
            "input": f"image, golden: float32 (batch, {channels}, {resolution}, {resolution}) RGB in [0, 1], "
            f"lighting conditions {lights} concatenated along channels; golden (batch, N, ...) when N > 1",
            "outputs": (
                "score: float32 (batch,), FAIL probability"
                if spec.model.difference == "learnable"
                else "score: float32 (batch,), embedding distance"
            )
            + "; FAIL when score > threshold",
            "threshold": str(spec.threshold),
            "difference": spec.model.difference,
            "light_conditions": json.dumps(lights),
            "num_golden": str(goldens),
            "labels": json.dumps(list(self.classes)),
        }
        example = (torch.rand(2, channels, resolution, resolution), torch.rand(*golden_shape))
        module = ExportableChangeClassifier(trained.model).eval()
        return ExportPlan(module, example, ["image", "golden"], ["score"], metadata)

    def card_notes(self, spec: ChangeSpec, meta: dict[str, Any]) -> list[str]:
        m = spec.model
        return [
            f"golden-vs-test PASS/FAIL inspection ({m.difference} difference, "
            f"{len(spec.dataset.light_conditions)} lighting condition(s), {spec.dataset.num_golden} golden(s)), "
            f"inputs resized to {m.resolution}x{m.resolution}; FAIL when the score > {spec.threshold:g}"
        ]


class ChangeTasks:
    """The change task family: the variant of a spec is its ``task_type``."""

    name = "change"
    spec_class = ChangeSpec
    variants: dict[str, TaskDef] = {"segment": ChangeSegmentTask(), "classify": ChangeClassifyTask()}

    def select(self, spec: ChangeSpec) -> TaskDef:
        return self.variants[spec.task_type]


TASK = ChangeTasks()
