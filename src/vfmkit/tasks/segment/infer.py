"""Full-resolution inference: resize the whole image, or slide windows of the training size over it; from a
PyTorch segmenter or an exported ONNX graph alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vfmkit.data.palette import Palette
from vfmkit.data.preprocess import resize
from vfmkit.engine.taskdef import Trained
from vfmkit.errors import VfmError
from vfmkit.tasks.segment.model import upsample_logits
from vfmkit.tasks.segment.sliding_window import sliding_window_logits
from vfmkit.tasks.segment.spec import InferenceSpec


def use_sliding(height: int, width: int, resolution: int, spec: InferenceSpec) -> bool:
    """Whether an image of this size is predicted with sliding windows."""
    if spec.mode == "auto":
        return max(height, width) > resolution
    return spec.mode == "sliding"


@dataclass
class SegmentRunner:
    """A segmentation model behind one call: windows (n, 3, R, R) in [0, 1] -> logits (n, K, h, w) (any h, w).

    Attributes:
        forward: the call.
        classes: class names in index order (K).
        palette: the training palette (overlays, colours).
        resolution: R, the training size (the window side and the resize target).
    """

    forward: Callable[[torch.Tensor], torch.Tensor]
    classes: list[str]
    palette: Palette
    resolution: int

    @classmethod
    def from_trained(cls, trained: Trained) -> SegmentRunner:
        spec = trained.spec
        return cls(
            trained.model.eval(), list(trained.meta["classes"]), Palette.from_spec(spec.dataset), spec.model.resolution
        )

    @classmethod
    def from_onnx(cls, path: Path) -> SegmentRunner:
        from vfmkit.export.runtime import OnnxModel

        model = OnnxModel(path)
        labels, colors = model.metadata.get("labels"), model.metadata.get("palette")
        if model.metadata.get("task") != "segment" or not isinstance(labels, list) or not isinstance(colors, list):
            raise VfmError(f"{path}: not a vfm segment export (no task/labels/palette in its ONNX metadata)")
        palette = Palette(labels, None, np.asarray(colors, dtype=np.uint8), 255, None)
        resolution = int(model.metadata.get("resolution", 0)) or model.input_size[0]
        return cls(lambda x: torch.from_numpy(model(x.numpy())["logits"]), labels, palette, resolution)

    @torch.inference_mode()
    def logits(self, image: torch.Tensor, inference: InferenceSpec) -> torch.Tensor:
        """Logits at the image's own size.

        Args:
            image: float (1, 3, H, W) RGB in [0, 1] at its original size.
            inference: resize / sliding / auto and the sliding overlap.

        Returns:
            float32 (1, K, H, W).
        """
        height, width = image.shape[-2:]
        res = self.resolution
        if use_sliding(height, width, res, inference):
            stride = max(1, int(round(res * (1 - inference.overlap))))
            return sliding_window_logits(self.forward, image, res, stride, len(self.classes))
        resized = resize(image[0], (res, res)).unsqueeze(0)
        return upsample_logits(self.forward(resized), (height, width)).float()
