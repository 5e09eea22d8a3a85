"""What the detect export adds to the engine's: graph metadata, real verification images, the resolution rule."""

from __future__ import annotations

import copy
import json

import torch
from torch import nn

from vfmkit.engine.taskdef import Trained
from vfmkit.errors import DataError, VfmError
from vfmkit.tasks.detect.data import DetectionDataset, collate_detection, load_detection_data
from vfmkit.tasks.detect.model import ExportableDetector
from vfmkit.tasks.detect.spec import DetectSpec


def export_metadata(trained: Trained, resolution: int, module: ExportableDetector) -> dict[str, str]:
    """The detect graph's metadata: labels and original category ids, ``num_select``, the head, what goes in and
    out (the engine adds task, resolution, backbone and mean/std)."""
    config = module.detector.config
    outputs = (
        f"pred_logits: float32 (batch, {config.num_queries}, {config.num_classes}) raw class logits (sigmoid scores, "
        f"no background class); pred_boxes: float32 (batch, {config.num_queries}, 4) cxcywh normalised to [0, 1]"
    )
    inputs = (
        f"inputs: float32 (batch, 3, {resolution}, {resolution}) RGB in [0, 1], the image resized (bilinear, "
        "antialiased) to a square; mean/std are applied inside the model"
    )
    if module.postprocess:
        inputs += "; orig_sizes: int64 (batch, 2) (height, width) of the original images"
        outputs += (
            f"; boxes: float32 (batch, {module.num_select}, 4) xyxy pixels of orig_sizes; scores: float32 (batch, "
            f"{module.num_select}) descending; labels: int64 (batch, {module.num_select}) original category ids"
        )
    spec = trained.spec
    return {
        "labels": json.dumps(trained.meta["classes"]),
        "category_ids": json.dumps(trained.meta["category_ids"]),
        "num_select": str(module.num_select),
        "postprocess": json.dumps(module.postprocess),
        "head": spec.model.head,
        "frozen_fm": spec.model.frozen_fm.backbone if spec.model.frozen_fm.enabled else "",
        "input": inputs,
        "outputs": outputs,
    }


def verification_batch(
    spec: DetectSpec, trained: Trained, resolution: int, count: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` real images of the val (else train) split, preprocessed as for training: images (N, 3, R, R)
    in [0, 1] and their original (height, width) (N, 2) int64.

    Raises:
        VfmError: the dataset cannot be read or holds no images (export.verify=false skips verification).
    """
    for name in ("val", "train"):
        try:
            data = load_detection_data(spec.dataset, (name,), check_images=False)
        except DataError as err:
            if name == "val":
                continue
            raise VfmError(
                f"export verification needs real images from the dataset: {err}; fix dataset.* or set "
                "export.verify=false"
            ) from None
        split = data.split(name)
        if split is not None and len(split):
            dataset = DetectionDataset(split, resolution)
            step = max(1, len(dataset) // count)
            images, targets = collate_detection([dataset[i] for i in range(0, len(dataset), step)][:count])
            return images, torch.stack([t["orig_size"] for t in targets])
    raise VfmError("export verification found no images in the val or train split; set export.verify=false")


def _recording(backbone: nn.Module, grids: dict[int, tuple[int, int]]):
    """``backbone.check_input`` that also records the token grid it returns in ``grids``."""
    check = type(backbone).check_input

    def check_input(images: torch.Tensor) -> tuple[int, int]:
        grids[id(backbone)] = check(backbone, images)
        return grids[id(backbone)]

    return check_input


def pin_position_grids(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """For export: ``module``, or a copy whose backbones (main and frozen foundation model) hold their position
    embeddings resampled to the grids they see on the example ``inputs`` (images (B, 3, H, W) first).

    timm and open_clip ViTs resize their position embedding on every forward at a grid other than their own, with an
    antialiased bicubic interpolation that has no ONNX opset-17 operator; both exporters then fail. The copy computes
    exactly the same outputs at that input size (the same resize, done once) and exports with plain operators.
    """
    if not any(callable(getattr(m, "pin_position_grid", None)) for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    grids: dict[int, tuple[int, int]] = {}
    backbones = [m for m in module.modules() if callable(getattr(m, "pin_position_grid", None))]
    for backbone in backbones:  # every path (forward, intermediates, token view) validates its input here
        backbone.check_input = _recording(backbone, grids)
    try:
        with torch.no_grad():
            module(*(tensor[:1] for tensor in inputs))
    finally:
        for backbone in backbones:
            del backbone.check_input
    for backbone in backbones:
        if id(backbone) in grids:
            backbone.pin_position_grid(grids[id(backbone)])
    return module
