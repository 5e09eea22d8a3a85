"""``vfm change evaluate | predict | export`` from a training checkpoint.

predict, segment variant: ``predict.source`` is a folder holding ``<dataset.a_dir>/`` and ``<dataset.b_dir>/`` (pairs
matched by relative path and stem; default: ``dataset.root``); writes ``masks/<name>.png`` (0 unchanged, 255 changed,
at the pair's original size) and ``overlays/<name>.png`` (image B with changed pixels tinted red) under
``predict.out`` (default ``<run>/predict``).

predict, classify variant: ``predict.source`` is a CSV in the training format (default: ``dataset.test_csv``, else
``dataset.val_csv``); writes ``predictions.csv`` with ``test_path, golden_path, object_name, score, decision, label``
(score = FAIL probability or distance; decision PASS/FAIL with the model's threshold; the paths are the first
lighting condition's files).

export: ONNX verified with onnxruntime on real preprocessed samples of the dataset (val, else train). Segment:
inputs ``image_a``, ``image_b`` float32 (batch, 3, R, R) RGB in [0, 1] -> ``change_logits`` float32 (batch, 2, R, R)
at the input resolution. Classify: inputs ``image``, ``golden`` float32 (batch, 3L, R, R) (golden (batch, N, 3L, R,
R) for multi-golden) -> ``score`` float32 (batch,). Mean/std are applied inside the graph.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vfmkit.data.change import preflight_change
from vfmkit.data.change_csv import load_change_csv_split
from vfmkit.data.images import load_image_rgb
from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.data.segmentation import index_by_stem
from vfmkit.engine.change_train import evaluate_split, make_dataset, summary_line, write_change_metrics
from vfmkit.engine.resume import find_checkpoint, run_dir_of
from vfmkit.errors import DataError, VfmError
from vfmkit.models.necks.common import resize_to
from vfmkit.spec.change import ChangeSpec
from vfmkit.spec.dense import ChangeDataSpec
from vfmkit.tasks.change.checkpoint import TrainedChange, load_trained_change
from vfmkit.tasks.change.model import ExportableChangeClassifier, ExportableChangeSegmenter

SEGMENT_IO = (["image_a", "image_b"], ["change_logits"])
CLASSIFY_IO = (["image", "golden"], ["score"])


def _trained(value: Path | None, action: str) -> TrainedChange:
    if value is None:
        raise VfmError(f"{action}.checkpoint is required: a run folder (runs/change/exp) or a .ckpt file")
    return load_trained_change(find_checkpoint(value))


def evaluate(spec: ChangeSpec) -> dict:
    """Metrics of a checkpoint on ``evaluate.split`` (data from this spec's ``dataset``).

    Writes ``<run>/evaluate/<split>/metrics.json`` and ``confusion_matrix.png`` (segment) or ``roc.png``
    (classify); returns the metrics.
    """
    trained = _trained(spec.evaluate.checkpoint, "evaluate")
    _check_variant(spec, trained)
    name = spec.evaluate.split
    split = preflight_change(_data_spec(spec, trained), (name,)).split(name)
    if split is None or len(split) == 0:
        raise DataError(f"dataset split {name!r} has no samples (evaluate.split)")
    metrics = evaluate_split(trained, split, spec.evaluate.batch_size)
    out_dir = run_dir_of(trained.checkpoint) / "evaluate" / name
    data = write_change_metrics(out_dir, metrics, trained.spec.task_type, f"{name}, {trained.checkpoint.name}")
    print(f"{name}: {len(split)} samples  {summary_line(trained.spec.task_type, data)}")
    print(f"written: {out_dir}")
    return data


def _check_variant(spec: ChangeSpec, trained: TrainedChange) -> None:
    if spec.task_type != trained.spec.task_type:
        raise VfmError(
            f"{trained.checkpoint} is a {trained.spec.task_type} model but this spec's task_type is {spec.task_type!r}"
        )


def _data_spec(spec: ChangeSpec, trained: TrainedChange, **update) -> ChangeDataSpec:
    """This spec's data locations with the input layout the model was trained on (lighting conditions, image
    extension, number of goldens)."""
    layout = {k: getattr(trained.spec.dataset, k) for k in ("light_conditions", "image_ext", "num_golden")}
    return spec.dataset.model_copy(update={**layout, **update})


def predict(spec: ChangeSpec) -> Path:
    """Change masks + overlays (segment) or a PASS/FAIL CSV (classify); returns the output folder or CSV."""
    trained = _trained(spec.predict.checkpoint, "predict")
    _check_variant(spec, trained)
    base = spec.predict.out or run_dir_of(trained.checkpoint) / "predict"
    if trained.spec.task_type == "segment":
        return _predict_masks(spec, trained, Path(base))
    return _predict_csv(spec, trained, Path(base))


def _source_pairs(spec: ChangeSpec) -> list[tuple[str, Path, Path]]:
    source = Path(spec.predict.source or spec.dataset.root or "")
    folders = [source / spec.dataset.a_dir, source / spec.dataset.b_dir]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise DataError(
            f"predict.source {source}: no {' or '.join(missing)} (expected <source>/"
            f"{spec.dataset.a_dir}/ and <source>/{spec.dataset.b_dir}/ with pairs of the same names)"
        )
    index_a, index_b = index_by_stem(folders[0]), index_by_stem(folders[1])
    only = sorted(set(index_a) ^ set(index_b))
    if only:
        print(f"  skipped {len(only)} name(s) without a partner: {', '.join(only[:5])}")
    return [(key, index_a[key], index_b[key]) for key in sorted(set(index_a) & set(index_b))]


@torch.inference_mode()
def _predict_masks(spec: ChangeSpec, trained: TrainedChange, out: Path) -> Path:
    res = trained.spec.model.resolution
    pairs = _source_pairs(spec)
    if not pairs:
        raise DataError(f"predict.source {spec.predict.source or spec.dataset.root}: no image pairs found")
    for key, path_a, path_b in pairs:
        image_a, image_b = (pil_to_tensor(load_image_rgb(p)) for p in (path_a, path_b))
        if image_a.shape != image_b.shape:
            print(f"  skipped {key}: {path_a} and {path_b} differ in size")
            continue
        logits = trained.model(resize(image_a, (res, res))[None], resize(image_b, (res, res))[None])
        mask = resize_to(logits, tuple(image_a.shape[-2:])).argmax(1)[0].numpy().astype(np.uint8)
        for folder, picture in (("masks", Image.fromarray(mask * 255)), ("overlays", _overlay(image_b, mask))):
            target = out / folder / f"{key}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            picture.save(target)
    print(f"predicted {len(pairs)} pair(s) -> {out / 'masks'}, {out / 'overlays'}")
    return out


def _overlay(image: torch.Tensor, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Image (3, H, W) in [0, 1] with pixels where mask == 1 blended towards red."""
    rgb = image.permute(1, 2, 0).numpy() * 255.0
    red = np.array([255.0, 0.0, 0.0])
    rgb = np.where(mask[..., None] == 1, (1 - alpha) * rgb + alpha * red, rgb)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


@torch.inference_mode()
def _predict_csv(spec: ChangeSpec, trained: TrainedChange, out_dir: Path) -> Path:
    source = spec.predict.source or spec.dataset.test_csv or spec.dataset.val_csv
    if source is None:
        raise VfmError("predict.source (a CSV of input_path,golden_path,label,object_name) is required")
    split = load_change_csv_split(_data_spec(spec, trained, test_csv=Path(source)), "test")
    dataset = make_dataset(trained.spec, split, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec.predict.batch_size)
    rows = []
    for test, golden, labels, indices in loader:
        scores = trained.model.score(test, golden)
        for score, label, index in zip(scores.tolist(), labels.tolist(), indices.tolist(), strict=True):
            files = split.test_files(index)[0], split.files(str(split.goldens[index]), str(split.objects[index]))[0]
            decision = "FAIL" if score > trained.threshold else "PASS"
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["test_path", "golden_path", "object_name", "score", "decision", "label"])
        writer.writerows(rows)
    tmp.replace(out)
    print(f"predicted {len(rows)} sample(s) -> {out} (FAIL when score > {trained.threshold:g})")
    return out


def _verification_inputs(spec: ChangeSpec, trained: TrainedChange, resolution: int, count: int = 4):
    """Up to ``count`` real samples of the val (else train) split, preprocessed as in evaluation."""
    try:
        report = preflight_change(_data_spec(spec, trained), ("val", "train"))
    except DataError as err:
        raise VfmError(
            f"export verification needs real samples from the dataset: {err}; fix dataset.* or set export.verify=false"
        ) from None
    for name in ("val", "train"):
        split = report.split(name)
        if split is not None and len(split):
            dataset = make_dataset(trained.spec, split, train=False, resolution=resolution)
            step = max(1, len(dataset) // count)
            items = [dataset[i] for i in range(0, len(dataset), step)][:count]
            return torch.stack([item[0] for item in items]), torch.stack([item[1] for item in items])
    raise VfmError("export verification found no samples in the val or train split; set export.verify=false")


def export(spec: ChangeSpec) -> Path:
    """Export a trained change model to ONNX (opset >= 17) and verify it; returns the .onnx path."""
    from vfmkit.export.onnx import export_onnx
    from vfmkit.export.verify import verify_onnx

    trained = _trained(spec.export.checkpoint, "export")
    resolution = spec.export.resolution or trained.spec.model.resolution
    if resolution % 32:
        raise VfmError(f"export.resolution must be a multiple of 32, got {resolution}")
    segment = trained.spec.task_type == "segment"
    module = (ExportableChangeSegmenter(trained.model) if segment else ExportableChangeClassifier(trained.model)).eval()
    inputs, outputs = SEGMENT_IO if segment else CLASSIFY_IO
    out = spec.export.out or run_dir_of(trained.checkpoint) / "export" / "model.onnx"
    example = _example_inputs(trained, resolution)
    export_onnx(module, example, out, inputs, outputs, export_metadata(trained, resolution), opset=spec.export.opset)
    shapes = ", ".join(f"'{n}' {tuple(t.shape[1:])}" for n, t in zip(inputs, example, strict=True))
    print(f"exported {out} (opset {spec.export.opset}, inputs {shapes} per sample in [0, 1], output '{outputs[0]}')")
    if spec.export.verify:
        real = _verification_inputs(spec, trained, resolution)
        result = verify_onnx(out, module, real, tolerance=spec.export.tolerance)
        print(
            f"onnxruntime vs PyTorch on {len(real[0])} real samples: max abs diff {result.max_abs_diff:.3g} "
            f"(tolerance {spec.export.tolerance:g})"
        )
    return out


def _example_inputs(trained: TrainedChange, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    if trained.spec.task_type == "segment":
        return torch.rand(2, 3, resolution, resolution), torch.rand(2, 3, resolution, resolution)
    channels = 3 * len(trained.spec.dataset.light_conditions)
    golden_shape = (2, channels, resolution, resolution)
    if trained.spec.dataset.num_golden > 1:
        golden_shape = (2, trained.spec.dataset.num_golden, channels, resolution, resolution)
    return torch.rand(2, channels, resolution, resolution), torch.rand(*golden_shape)


def export_metadata(trained: TrainedChange, resolution: int) -> dict[str, str]:
    """What a consumer of the .onnx file needs: variant, inputs/outputs, threshold, preprocessing, provenance."""
    spec = trained.spec
    prep = trained.model.neck.backbone.preprocessing
    meta = {
        "task": "change",
        "variant": spec.task_type,
        "resolution": str(resolution),
        "mean": json.dumps(list(prep.mean)),
        "std": json.dumps(list(prep.std)),
        "backbone": spec.model.backbone,
    }
    if spec.task_type == "segment":
        meta["input"] = (
            f"image_a, image_b: float32 (batch, 3, {resolution}, {resolution}) RGB in [0, 1] (bilinear, "
            "antialiased resize); mean/std are applied inside the model"
        )
        meta["outputs"] = "change_logits: float32 (batch, 2, H, W) at the input resolution; argmax 1 = changed"
        meta["labels"] = json.dumps(["unchanged", "changed"])
        return meta
    lights = spec.dataset.light_conditions
    meta["input"] = (
        f"image, golden: float32 (batch, {3 * len(lights)}, {resolution}, {resolution}) RGB in [0, 1], "
        f"lighting conditions {lights} concatenated along channels; golden (batch, N, ...) when N > 1"
    )
    meta["outputs"] = (
        "score: float32 (batch,), FAIL probability"
        if spec.model.difference == "learnable"
        else "score: float32 (batch,), embedding distance"
    ) + "; FAIL when score > threshold"
    meta.update(
        threshold=str(trained.threshold),
        difference=spec.model.difference,
        light_conditions=json.dumps(lights),
        num_golden=str(spec.dataset.num_golden),
    )
    return meta
