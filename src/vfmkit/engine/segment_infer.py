"""``vfm segment evaluate | predict | export``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vfmkit.data.images import list_image_files, load_image_rgb
from vfmkit.data.palette import colorize, overlay
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.data.segmentation import SegmentationDataset, load_segment_split
from vfmkit.engine.resume import find_checkpoint, run_dir_of
from vfmkit.engine.segment_train import evaluate_segmenter
from vfmkit.errors import DataError, VfmError
from vfmkit.spec.segment import SegmentSpec
from vfmkit.tasks.segment.checkpoint import TrainedSegmenter, load_trained_segmenter
from vfmkit.tasks.segment.infer import predict_logits
from vfmkit.tasks.segment.model import ExportableSegmenter


def _trained(value: Path | None, action: str) -> tuple[Path, TrainedSegmenter]:
    if value is None:
        raise VfmError(f"{action}.checkpoint is required: a run folder (runs/segment/exp) or a .ckpt file")
    checkpoint = find_checkpoint(value)
    return checkpoint, load_trained_segmenter(checkpoint)


def evaluate(spec: SegmentSpec) -> dict:
    """mIoU, per-class IoU/precision/recall/F1 and pixel accuracy of a checkpoint on ``evaluate.split`` at full
    resolution; written to ``<run>/evaluate/<split>/``."""
    checkpoint, trained = _trained(spec.evaluate.checkpoint, "evaluate")
    split = load_segment_split(spec.dataset, spec.evaluate.split)
    if split is None or not len(split):
        raise DataError(f"dataset split {spec.evaluate.split!r} has no images under {spec.dataset.root}")
    run_spec = trained.spec.model_copy(update={"inference": spec.inference})
    out_dir = run_dir_of(checkpoint) / "evaluate" / spec.evaluate.split
    metrics = evaluate_segmenter(trained.segmenter, split, trained.palette, run_spec, out_dir)
    print(f"written: {out_dir / 'metrics.json'}, {out_dir / 'confusion_matrix.png'}")
    return metrics


def predict(spec: SegmentSpec) -> Path:
    """Index masks (PNG, pixel = class index) and colour overlays for every image of ``predict.source``."""
    if spec.predict.source is None:
        raise VfmError("predict.source (image folder, glob or list file) is required")
    checkpoint, trained = _trained(spec.predict.checkpoint, "predict")
    out = spec.predict.out or run_dir_of(checkpoint) / "predict"
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    written, skipped = 0, []
    for path in list_image_files(spec.predict.source):
        try:
            image = load_image_rgb(path)
        except DataError as err:
            skipped.append(str(err))
            continue
        logits = predict_logits(
            trained.segmenter, pil_to_tensor(image).unsqueeze(0), trained.spec.model.resolution, spec.inference
        )
        mask = logits[0].argmax(dim=0).numpy().astype(np.uint8)
        Image.fromarray(mask, mode="L").save(out / "masks" / f"{path.stem}.png")
        overlay(image, mask, trained.palette).save(out / "overlays" / f"{path.stem}.png")
        colorize(mask, trained.palette).save(out / "overlays" / f"{path.stem}_mask.png")
        written += 1
    print(f"predicted {written} image(s): masks in {out / 'masks'}, overlays in {out / 'overlays'}")
    for line in skipped:
        print(f"  skipped {line}")
    return out


def export(spec: SegmentSpec) -> Path:
    """ONNX ``image`` (B, 3, R, R) in [0, 1] -> ``logits`` (B, K, R, R), verified with onnxruntime on real images."""
    from vfmkit.export.onnx import export_onnx
    from vfmkit.export.verify import verify_onnx

    checkpoint, trained = _trained(spec.export.checkpoint, "export")
    resolution = spec.export.resolution or trained.spec.model.resolution
    module = ExportableSegmenter(trained.segmenter).eval()
    out = spec.export.out or run_dir_of(checkpoint) / "export" / "model.onnx"
    prep = trained.segmenter.backbone.preprocessing
    metadata = {
        "task": "segment",
        "labels": json.dumps(trained.classes),
        "resolution": str(resolution),
        "input": f"image: float32 (batch, 3, {resolution}, {resolution}) RGB in [0, 1] (bilinear resize); "
        "mean/std inside",
        "outputs": "logits: float32 (batch, num_classes, H, W) at the input size",
        "mean": json.dumps(list(prep.mean)),
        "std": json.dumps(list(prep.std)),
        "palette": json.dumps(trained.palette.colors.tolist()),
        "backbone": trained.spec.model.backbone,
    }
    export_onnx(
        module,
        (torch.rand(2, 3, resolution, resolution),),
        out,
        ["image"],
        ["logits"],
        metadata,
        opset=spec.export.opset,
    )
    print(f"exported {out} (input 'image' (batch, 3, {resolution}, {resolution}) in [0, 1], output 'logits')")
    if spec.export.verify:
        images = _verification_images(spec, trained, resolution)
        result = verify_onnx(out, module, (images,), tolerance=spec.export.tolerance)
        print(
            f"onnxruntime vs PyTorch on {len(images)} real images: max abs diff {result.max_abs_diff:.3g} "
            f"(tolerance {spec.export.tolerance:g})"
        )
    return out


def _verification_images(spec: SegmentSpec, trained: TrainedSegmenter, resolution: int, count: int = 2):
    for name in ("val", "train"):
        split = load_segment_split(spec.dataset, name)
        if split is not None and len(split):
            dataset = SegmentationDataset(split, trained.palette, resolution, mask_size="resized")
            return torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    raise VfmError("export verification found no images in the val or train split; set export.verify=false to skip")
