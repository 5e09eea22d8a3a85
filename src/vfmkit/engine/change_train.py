"""``vfm change train``: preflight, Siamese model, pair data, Lightning fit, final evaluation, model card.

Also the split evaluation shared with ``vfm change evaluate``: segment metrics at the masks' original resolution
(the pair is resized to the model resolution, the logits are bilinearly resized back), classify metrics with the
ROC curve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from vfmkit.data.change import ChangePreflightReport, ChangeSegDataset, preflight_change
from vfmkit.data.change_csv import ChangeClassifyDataset
from vfmkit.data.dense_augment import collate_dense
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.engine.model_card import write_model_card
from vfmkit.engine.plots import plot_confusion_matrix
from vfmkit.engine.resume import find_checkpoint
from vfmkit.engine.run_dir import atomic_write_text, spec_hash
from vfmkit.engine.runs import copy_trained_weights, fit, make_loader, prepare_run
from vfmkit.errors import VfmError
from vfmkit.models.necks.common import resize_to
from vfmkit.spec.change import ChangeSpec
from vfmkit.tasks.change.checkpoint import TrainedChange, load_trained_change
from vfmkit.tasks.change.model import build_change_model
from vfmkit.tasks.change.module import make_module
from vfmkit.tasks.dense_metrics import ChangeClassifyMeter, ChangeSegMeter, roc_curve

SEGMENT_HEADLINE = ("change_f1", "change_iou", "change_precision", "change_recall", "overall_accuracy", "miou")
CLASSIFY_HEADLINE = ("accuracy", "defect_accuracy", "false_alarm_rate", "miss_rate", "auc")


@dataclass
class TrainResult:
    """Where a training run went and how it scored on the validation split (None without one)."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    val: dict | None


def make_dataset(spec: ChangeSpec, split, train: bool, resolution: int | None = None, full_masks: bool = False):
    """The pair dataset of a split: :class:`ChangeSegDataset` (segment) or :class:`ChangeClassifyDataset`."""
    res = resolution or spec.model.resolution
    augment, seed = spec.dataset.augment, spec.train.seed
    if spec.task_type == "segment":
        return ChangeSegDataset(
            split,
            res,
            train=train,
            augment=augment,
            seed=seed,
            ignore_index=spec.dataset.ignore_index,
            mask_size="full" if full_masks else "resized",
        )
    return ChangeClassifyDataset(split, res, train=train, augment=augment, seed=seed)


def _loaders(spec: ChangeSpec, report: ChangePreflightReport) -> tuple[DataLoader, DataLoader | None]:
    batch, workers, seed = spec.train.batch_size, spec.train.num_workers, spec.train.seed
    train_set = make_dataset(spec, report.split("train"), train=True)
    train_loader = make_loader(train_set, batch, workers, EpochSeededSampler(len(train_set), seed, dataset=train_set))
    val_split = report.split("val")
    val_loader = None
    if val_split is not None and len(val_split):
        val_loader = make_loader(make_dataset(spec, val_split, train=False), batch, workers)
    return train_loader, val_loader


def _build_model(spec: ChangeSpec):
    model = build_change_model(spec)
    if spec.train.init_from is not None:
        trained = load_trained_change(find_checkpoint(spec.train.init_from))
        if trained.spec.task_type != spec.task_type or type(trained.model) is not type(model):
            raise VfmError(
                f"train.init_from {spec.train.init_from}: a {trained.spec.task_type} "
                f"{type(trained.model).__name__}, this run trains a {type(model).__name__}"
            )
        copy_trained_weights(model, trained.model, spec.train.init_from)
    return model


def train(spec: ChangeSpec) -> TrainResult:
    """Train a change model as the spec says; everything goes into a run folder (see README)."""
    report = preflight_change(spec.dataset, ("train", "val"))
    print(report.format())
    pl.seed_everything(spec.train.seed, workers=True, verbose=False)
    module = make_module(_build_model(spec), spec)
    # the run folder is created once the model is built: a bad backbone or checkpoint leaves nothing behind
    run_dir, resume_from = prepare_run(spec, "change")
    print(f"run folder: {run_dir}")
    train_loader, val_loader = _loaders(spec, report)
    headline = "val/change_f1" if spec.task_type == "segment" else "val/accuracy"
    checkpoints = fit(spec, run_dir, module, train_loader, val_loader, resume_from, headline)
    val = None
    if val_loader is not None:
        trained = load_trained_change(checkpoints.best_path)
        metrics = evaluate_split(trained, report.split("val"), spec.evaluate.batch_size)
        val = write_change_metrics(
            run_dir / "evaluate" / "val",
            metrics,
            spec.task_type,
            f"val, best checkpoint ({checkpoints.best_path.name})",
        )
    _write_card(spec, run_dir, report, val)
    print(f"done: {run_dir}  " + summary_line(spec.task_type, val) if val else f"done: {run_dir}")
    return TrainResult(run_dir, checkpoints.best_path, checkpoints.last_path, val)


@torch.inference_mode()
def evaluate_split(trained: TrainedChange, split, batch_size: int, workers: int = 0) -> dict:
    """Metrics of a trained model on a split (eval transform; segment masks at their original resolution).

    Returns:
        :meth:`ChangeSegMeter.compute` or :meth:`ChangeClassifyMeter.compute` output.
    """
    spec, model = trained.spec, trained.model.eval()
    dataset = make_dataset(spec, split, train=False, full_masks=True)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_dense)
    if spec.task_type == "segment":
        meter = ChangeSegMeter(spec.dataset.ignore_index)
        for image_a, image_b, masks, _ in loader:
            logits = model(image_a, image_b)
            for sample, mask in zip(logits, masks, strict=True):
                meter.update(resize_to(sample[None], tuple(mask.shape[-2:])), mask[None])
        return meter.compute()
    meter = ChangeClassifyMeter(trained.threshold)
    for test, golden, labels, _ in loader:
        meter.update(model.score(test, golden), labels)
    return meter.compute()


def summary_line(task_type: str, metrics: dict) -> str:
    """One line of headline metrics."""
    keys = SEGMENT_HEADLINE if task_type == "segment" else CLASSIFY_HEADLINE
    return "  ".join(f"{k} {metrics[k]:.4f}" if metrics.get(k) is not None else f"{k} -" for k in keys)


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def write_change_metrics(out_dir: Path, metrics: dict, task_type: str, title: str) -> dict:
    """``metrics.json`` plus ``confusion_matrix.png`` (segment) or ``roc.png`` (classify); returns the JSON dict.

    For classify, ``best_threshold`` / ``best_threshold_accuracy`` report the score threshold with the highest
    accuracy on this split (information for calibration; the model's own threshold is what the metrics use).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {k: _jsonable(v) for k, v in metrics.items() if k not in ("scores", "labels", "confusion")}
    if task_type == "segment":
        data["confusion"] = _jsonable(metrics["confusion"])
        data["class_names"] = ["unchanged", "changed"]
        plot_confusion_matrix(metrics["confusion"], ["unchanged", "changed"], out_dir / "confusion_matrix.png", title)
    else:
        data.update(_best_threshold(metrics["scores"], metrics["labels"]))
        plot_roc(metrics["scores"], metrics["labels"], out_dir / "roc.png", title)
    atomic_write_text(out_dir / "metrics.json", json.dumps(data, indent=2))
    return data


def _best_threshold(scores: np.ndarray, labels: np.ndarray) -> dict:
    if not len(scores):
        return {"best_threshold": None, "best_threshold_accuracy": None}
    candidates = np.unique(scores)
    accuracy = [float(np.mean((scores > t) == (labels == 1))) for t in np.r_[candidates, -np.inf]]
    best = int(np.argmax(accuracy))
    threshold = float(np.r_[candidates, -np.inf][best])
    return {"best_threshold": threshold if np.isfinite(threshold) else None, "best_threshold_accuracy": accuracy[best]}


def plot_roc(scores: np.ndarray, labels: np.ndarray, path: Path, title: str = "") -> Path:
    """ROC curve (FAIL = positive, higher score = more likely FAIL) with its AUC, as a PNG."""
    import matplotlib.pyplot as plt  # the Agg backend is selected by vfmkit.engine.plots

    fpr, tpr, _, auc = roc_curve(scores, labels)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, marker=".", label=f"AUC {auc:.4f}" if np.isfinite(auc) else "AUC undefined")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("false-alarm rate (PASS flagged FAIL)")
    ax.set_ylabel("defect accuracy (FAIL recall)")
    ax.set_title(title or "ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write_card(spec: ChangeSpec, run_dir: Path, report: ChangePreflightReport, val: dict | None) -> None:
    counts = {name: len(split) for name, split in report.splits.items() if split is not None}
    keys = SEGMENT_HEADLINE if spec.task_type == "segment" else CLASSIFY_HEADLINE
    metrics = {k: val.get(k) for k in keys} if val else {"validation": "none (no val split)"}
    m = spec.model
    data = {
        "variant": spec.task_type,
        "samples per split": counts,
        "neck": m.neck,
        "backbone frozen": m.freeze_backbone,
    }
    if spec.task_type == "segment":
        use = (
            f"binary change segmentation of co-registered image pairs, inputs resized to {m.resolution}x"
            f"{m.resolution}; output change logits (B, 2, H, W) at the input resolution"
        )
    else:
        data["difference"] = m.difference
        data["threshold"] = spec.threshold
        use = (
            f"golden-vs-test PASS/FAIL inspection ({m.difference} difference, "
            f"{len(spec.dataset.light_conditions)} lighting condition(s), {spec.dataset.num_golden} golden(s)), "
            f"inputs resized to {m.resolution}x{m.resolution}; FAIL when the score > {spec.threshold:g}"
        )
    write_model_card(run_dir, "change", m.backbone, m.pretrained, data, metrics, spec_hash(spec), [use])
