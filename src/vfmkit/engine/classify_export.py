"""``vfm classify export``: ONNX with a dynamic batch, metadata inside, verified with onnxruntime against PyTorch on
real preprocessed images."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vfmkit.data.classification import load_split, resolve_classes
from vfmkit.data.sampling import ClassificationDataset
from vfmkit.engine.resume import find_checkpoint, run_dir_of
from vfmkit.errors import DataError, VfmError
from vfmkit.spec.classify import ClassifySpec
from vfmkit.tasks.classify.checkpoint import TrainedClassifier, load_trained_classifier
from vfmkit.tasks.classify.model import ExportableClassifier

INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["logits", "probs"]


def export_metadata(trained: TrainedClassifier, resolution: int) -> dict[str, str]:
    """What a consumer of the .onnx file needs: labels, preprocessing, input/output contract, provenance."""
    prep = trained.classifier.backbone.preprocessing
    return {
        "task": "classify",
        "labels": json.dumps(trained.classes),
        "resolution": str(resolution),
        "input": "image: float32 (batch, 3, H, W) RGB in [0, 1], resized (bilinear, antialiased) to H = W = "
        f"{resolution}; mean/std are applied inside the model",
        "outputs": "logits: float32 (batch, num_classes); probs: softmax of logits",
        "mean": json.dumps(list(prep.mean)),
        "std": json.dumps(list(prep.std)),
        "backbone": trained.spec.model.backbone,
    }


def verification_images(spec: ClassifySpec, trained: TrainedClassifier, resolution: int, count: int = 4):
    """Up to ``count`` real images of the val (else train) split, preprocessed as in evaluation: (B, 3, R, R)."""
    try:
        classes = resolve_classes(spec.dataset)
        for name in ("val", "train"):
            split = load_split(spec.dataset, name, classes)
            if split is not None and len(split):
                dataset = ClassificationDataset(split, resolution)
                step = max(1, len(dataset) // count)
                return torch.stack([dataset[i][0] for i in range(0, len(dataset), step)][:count])
    except DataError as err:
        raise VfmError(
            f"export verification needs real images from the dataset: {err}; fix dataset.* or set export.verify=false"
        ) from None
    raise VfmError("export verification found no images in the val or train split; set export.verify=false to skip")


def export(spec: ClassifySpec) -> Path:
    """Export a trained classifier to ONNX (opset >= 17) and verify it; returns the .onnx path."""
    from vfmkit.export.onnx import export_onnx
    from vfmkit.export.verify import verify_onnx

    if spec.export.checkpoint is None:
        raise VfmError("export.checkpoint is required: a run folder (runs/classify/exp) or a .ckpt file")
    checkpoint = find_checkpoint(spec.export.checkpoint)
    trained = load_trained_classifier(checkpoint)
    resolution = spec.export.resolution or trained.spec.model.resolution
    module = ExportableClassifier(trained.classifier).eval()
    out = spec.export.out or run_dir_of(checkpoint) / "export" / "model.onnx"
    example = torch.rand(2, 3, resolution, resolution)
    export_onnx(
        module,
        (example,),
        out,
        INPUT_NAMES,
        OUTPUT_NAMES,
        export_metadata(trained, resolution),
        opset=spec.export.opset,
    )
    print(
        f"exported {out} (opset {spec.export.opset}, input 'image' (batch, 3, {resolution}, {resolution}) in [0, 1], "
        "outputs 'logits', 'probs')"
    )
    if spec.export.verify:
        images = verification_images(spec, trained, resolution)
        result = verify_onnx(out, module, (images,), tolerance=spec.export.tolerance)
        print(
            f"onnxruntime vs PyTorch on {len(images)} real images: max abs diff {result.max_abs_diff:.3g} "
            f"(tolerance {spec.export.tolerance:g})"
        )
    return out
