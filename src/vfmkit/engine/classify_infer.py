"""``vfm classify evaluate | predict | export``: from a checkpoint (or, for predict, an exported .onnx file)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vfmkit.data.classification import preflight
from vfmkit.data.images import list_image_files, load_image_rgb
from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.engine.classify_train import evaluate_split, write_metrics
from vfmkit.engine.resume import find_checkpoint, run_dir_of
from vfmkit.errors import DataError, VfmError
from vfmkit.spec.classify import ClassifySpec
from vfmkit.tasks.classify.checkpoint import TrainedClassifier, load_trained_classifier


def _checkpoint(value: Path | None, action: str) -> Path:
    if value is None:
        raise VfmError(f"{action}.checkpoint is required: a run folder (runs/classify/exp) or a .ckpt file")
    return find_checkpoint(value)


def evaluate(spec: ClassifySpec) -> dict:
    """Top-1/top-k, per-class accuracy and the confusion matrix of a checkpoint on ``evaluate.split``.

    Writes ``<run>/evaluate/<split>/metrics.json`` and ``confusion_matrix.png`` and returns the metrics.
    """
    checkpoint = _checkpoint(spec.evaluate.checkpoint, "evaluate")
    trained = load_trained_classifier(checkpoint)
    split_name = spec.evaluate.split
    report = preflight(spec.dataset, (split_name,), classes=trained.classes)
    split = report.split(split_name)
    if split is None or len(split) == 0:
        raise DataError(f"dataset split {split_name!r} has no images (evaluate.split)")
    resolution = trained.spec.model.resolution
    metrics = evaluate_split(trained.classifier, split, resolution, spec.evaluate.batch_size, trained.spec.top_k)
    out_dir = run_dir_of(checkpoint) / "evaluate" / split_name
    data = write_metrics(out_dir, metrics, trained.classes, f"{split_name}, {checkpoint.name}")
    print(f"{split_name}: {metrics.total} images  top-1 {metrics.top1:.2f}%  top-{metrics.k} {metrics.topk:.2f}%")
    for name, accuracy in data["per_class_accuracy"].items():
        print(f"  {name}: {'-' if accuracy is None else f'{accuracy:.2f}%'}")
    print(f"written: {out_dir / 'metrics.json'}, {out_dir / 'confusion_matrix.png'}")
    return data


@dataclass
class Predictor:
    """Images -> class probabilities, from a PyTorch checkpoint or an exported ONNX file."""

    classes: list[str]
    resolution: int
    run: object

    @classmethod
    def from_path(cls, path: Path) -> Predictor:
        if path.suffix == ".onnx":
            from vfmkit.export.runtime import OnnxModel

            model = OnnxModel(path)
            labels = model.metadata.get("labels")
            if not isinstance(labels, list):
                raise VfmError(f"{path}: no 'labels' in the ONNX metadata; not a vfm classify export")
            size = int(model.metadata.get("resolution", 0)) or model.input_size[0]
            return cls(labels, size, lambda batch: model(batch.numpy())["probs"])
        trained: TrainedClassifier = load_trained_classifier(find_checkpoint(path))

        @torch.inference_mode()
        def run(batch: torch.Tensor) -> np.ndarray:
            return trained.classifier(batch).softmax(dim=-1).numpy()

        return cls(trained.classes, trained.spec.model.resolution, run)

    def load(self, path: Path) -> torch.Tensor:
        return resize(pil_to_tensor(load_image_rgb(path)), (self.resolution, self.resolution))


def predict(spec: ClassifySpec) -> Path:
    """Top-k labels and scores for every image of ``predict.source`` into a CSV (path, label_1, score_1, ...).

    Unreadable images are reported and left out of the CSV.
    """
    if spec.predict.checkpoint is None or spec.predict.source is None:
        raise VfmError(
            "predict.checkpoint (run folder, .ckpt or .onnx) and predict.source (folder, glob or list) "
            "are both required"
        )
    predictor = Predictor.from_path(Path(spec.predict.checkpoint))
    files = list_image_files(spec.predict.source)
    k = min(spec.top_k, len(predictor.classes))
    out = spec.predict.out or _default_predict_out(Path(spec.predict.checkpoint))
    rows, skipped = _predict_rows(predictor, files, spec.predict.batch_size, k)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path"] + [f"{kind}_{i + 1}" for i in range(k) for kind in ("label", "score")])
        writer.writerows(rows)
    tmp.replace(out)
    print(f"predicted {len(rows)} image(s) -> {out}")
    for path, reason in skipped:
        print(f"  skipped {path}: {reason}")
    return out


def _default_predict_out(checkpoint: Path) -> Path:
    base = checkpoint.parent if checkpoint.suffix == ".onnx" else run_dir_of(find_checkpoint(checkpoint))
    return base / "predict" / "predictions.csv"


def _predict_rows(predictor: Predictor, files: list[Path], batch_size: int, k: int):
    rows, skipped, batch, names = [], [], [], []

    def flush() -> None:
        probs = np.asarray(predictor.run(torch.stack(batch)))
        top = np.argsort(-probs, axis=1)[:, :k]
        for name, order, row in zip(names, top, probs, strict=True):
            rows.append([str(name)] + [v for j in order for v in (predictor.classes[j], f"{row[j]:.6f}")])
        batch.clear()
        names.clear()

    for path in files:
        try:
            batch.append(predictor.load(path))
            names.append(path)
        except DataError as err:
            skipped.append((path, str(err)))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return rows, skipped
