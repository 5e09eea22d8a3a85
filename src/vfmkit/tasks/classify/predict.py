"""``vfm classify predict``: top-k labels and scores per image, from a checkpoint or an exported .onnx file."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vfmkit.data.images import list_image_files, load_image_rgb
from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.engine.run_dir import atomic_write_text
from vfmkit.engine.taskdef import PredictResult, Trained
from vfmkit.errors import DataError, VfmError


@dataclass
class Predictor:
    """Images (B, 3, R, R) float in [0, 1] -> class probabilities (B, K) as numpy.

    Attributes:
        classes: class names in output order.
        resolution: R, the side images are resized to.
        run: the batch function.
    """

    classes: list[str]
    resolution: int
    run: Callable[[torch.Tensor], np.ndarray]

    @classmethod
    def from_trained(cls, trained: Trained) -> Predictor:
        @torch.inference_mode()
        def run(batch: torch.Tensor) -> np.ndarray:
            return trained.model(batch).softmax(dim=-1).numpy()

        return cls(list(trained.meta["classes"]), trained.spec.model.resolution, run)

    @classmethod
    def from_onnx(cls, path: Path) -> Predictor:
        from vfmkit.export.runtime import OnnxModel

        model = OnnxModel(path)
        labels = model.metadata.get("labels")
        if not isinstance(labels, list):
            raise VfmError(f"{path}: no 'labels' in the ONNX metadata; not a vfm classify export")
        size = int(model.metadata.get("resolution", 0)) or model.input_size[0]
        return cls(labels, size, lambda batch: model(batch.numpy())["probs"])

    def load(self, path: Path) -> torch.Tensor:
        """One image file as (3, R, R) float in [0, 1] (bilinear antialiased resize, as in evaluation)."""
        return resize(pil_to_tensor(load_image_rgb(path)), (self.resolution, self.resolution))


def predict_csv(predictor: Predictor, source: Path, out: Path, batch_size: int, top_k: int) -> PredictResult:
    """Top-k labels and scores for every image of ``source`` into ``out`` (CSV: path, label_1, score_1, ...).

    Unreadable images are left out and reported; nothing is written when no image could be read.
    """
    files = list_image_files(source)
    k = min(top_k, len(predictor.classes))
    rows, skipped = _predict_rows(predictor, files, batch_size, k)
    if rows:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path"] + [f"{kind}_{i + 1}" for i in range(k) for kind in ("label", "score")])
        writer.writerows(rows)
        atomic_write_text(out, buffer.getvalue())
        print(f"predicted {len(rows)} image(s) -> {out}")
    return PredictResult(out, len(rows), skipped)


def _predict_rows(predictor: Predictor, files: list[Path], batch_size: int, k: int):
    rows: list[list[str]] = []
    skipped: list[str] = []
    batch: list[torch.Tensor] = []
    names: list[Path] = []

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
            skipped.append(f"{path}: {err}")
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return rows, skipped
