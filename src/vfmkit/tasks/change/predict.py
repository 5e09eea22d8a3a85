"""``vfm change predict``: change masks + overlays (segment) or a PASS/FAIL CSV (classify).

Segment: ``predict.source`` is a folder holding ``<dataset.a_dir>/`` and ``<dataset.b_dir>/`` (pairs matched by
relative path and stem; default: ``dataset.root``); writes ``masks/<name>.png`` (0 unchanged, 255 changed, at the
pair's original size) and ``overlays/<name>.png`` (image B with changed pixels tinted red).

Classify: ``predict.source`` is a CSV in the training format (default: ``dataset.test_csv``, else
``dataset.val_csv``); writes ``predictions.csv`` with ``test_path, golden_path, object_name, score, decision, label``
(score = FAIL probability or distance; decision PASS/FAIL with the model's threshold; the paths are the first
lighting condition's files).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vfmkit.data.images import index_by_stem, load_image_rgb
from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.engine.run_dir import atomic_write_text
from vfmkit.engine.taskdef import PredictResult, Trained
from vfmkit.errors import DataError, VfmError
from vfmkit.models.necks.common import resize_to
from vfmkit.tasks.change.data import make_dataset, trained_layout
from vfmkit.tasks.change.data_csv import load_change_csv_split
from vfmkit.tasks.change.spec import ChangeSpec
from vfmkit.utils.atomic import save_image_atomically


def _source_pairs(spec: ChangeSpec) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    source = Path(spec.predict.source or spec.dataset.root or "")
    folders = [source / spec.dataset.a_dir, source / spec.dataset.b_dir]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise DataError(
            f"predict.source {source}: no {' or '.join(missing)} (expected <source>/"
            f"{spec.dataset.a_dir}/ and <source>/{spec.dataset.b_dir}/ with pairs of the same names)"
        )
    index_a, index_b = index_by_stem(folders[0]), index_by_stem(folders[1])
    skipped = [f"{name}: no partner image" for name in sorted(set(index_a) ^ set(index_b))]
    return [(key, index_a[key], index_b[key]) for key in sorted(set(index_a) & set(index_b))], skipped


def _overlay(image: torch.Tensor, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Image (3, H, W) in [0, 1] with pixels where mask == 1 blended towards red."""
    rgb = image.permute(1, 2, 0).numpy() * 255.0
    red = np.array([255.0, 0.0, 0.0])
    rgb = np.where(mask[..., None] == 1, (1 - alpha) * rgb + alpha * red, rgb)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


@torch.inference_mode()
def predict_masks(spec: ChangeSpec, trained: Trained, out: Path) -> PredictResult:
    res = trained.spec.model.resolution
    pairs, skipped = _source_pairs(spec)
    written = 0
    for key, path_a, path_b in pairs:
        try:
            image_a, image_b = (pil_to_tensor(load_image_rgb(p)) for p in (path_a, path_b))
        except DataError as err:
            skipped.append(str(err))
            continue
        if image_a.shape != image_b.shape:
            skipped.append(f"{key}: {path_a} and {path_b} differ in size")
            continue
        logits = trained.model(resize(image_a, (res, res))[None], resize(image_b, (res, res))[None])
        mask = resize_to(logits, tuple(image_a.shape[-2:])).argmax(1)[0].numpy().astype(np.uint8)
        for folder, picture in (("masks", Image.fromarray(mask * 255)), ("overlays", _overlay(image_b, mask))):
            save_image_atomically(picture, out / folder / f"{key}.png")
        written += 1
    if written:
        print(f"predicted {written} pair(s) -> {out / 'masks'}, {out / 'overlays'}")
    return PredictResult(out, written, skipped)


@torch.inference_mode()
def predict_csv(spec: ChangeSpec, trained: Trained, out_dir: Path) -> PredictResult:
    source = spec.predict.source or spec.dataset.test_csv or spec.dataset.val_csv
    if source is None:
        raise VfmError("predict.source (a CSV of input_path,golden_path,label,object_name) is required")
    split = load_change_csv_split(trained_layout(spec, trained, test_csv=Path(source)), "test")
    dataset = make_dataset(trained.spec, split, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec.predict.batch_size)
    threshold = trained.spec.threshold
    rows = []
    for test, golden, labels, indices in loader:
        scores = trained.model.score(test, golden)
        for score, label, index in zip(scores.tolist(), labels.tolist(), indices.tolist(), strict=True):
            files = split.test_files(index)[0], split.files(str(split.goldens[index]), str(split.objects[index]))[0]
            decision = "FAIL" if score > threshold else "PASS"
            rows.append(
                [
                    str(files[0]),
                    str(files[1]),
                    str(split.objects[index]),
                    f"{score:.6f}",
                    decision,
                    "FAIL" if label else "PASS",
                ]
            )
    out = out_dir / "predictions.csv"
    if rows:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["test_path", "golden_path", "object_name", "score", "decision", "label"])
        writer.writerows(rows)
        atomic_write_text(out, buffer.getvalue())
        print(f"predicted {len(rows)} sample(s) -> {out} (FAIL when score > {threshold:g})")
    return PredictResult(out, len(rows), [])
