"""Full-resolution inference: resize the whole image, or slide windows of the training size over it."""

from __future__ import annotations

import torch

from vfmkit.data.preprocess import resize
from vfmkit.spec.segment import InferenceSpec
from vfmkit.tasks.segment.model import Segmenter, upsample_logits
from vfmkit.tasks.sliding_window import sliding_window_logits


def use_sliding(height: int, width: int, resolution: int, spec: InferenceSpec) -> bool:
    """Whether an image of this size is predicted with sliding windows."""
    if spec.mode == "auto":
        return max(height, width) > resolution
    return spec.mode == "sliding"


@torch.inference_mode()
def predict_logits(segmenter: Segmenter, image: torch.Tensor, resolution: int, spec: InferenceSpec) -> torch.Tensor:
    """Logits at the image's own size.

    Args:
        segmenter: the model (eval mode).
        image: float (1, 3, H, W) RGB in [0, 1] at its original size.
        resolution: the training resolution R (window side, or the resize target).
        spec: resize / sliding / auto and the sliding overlap.

    Returns:
        float32 (1, K, H, W).
    """
    height, width = image.shape[-2:]
    if use_sliding(height, width, resolution, spec):
        stride = max(1, int(round(resolution * (1 - spec.overlap))))
        num_classes = segmenter.head.classifier.out_channels
        return sliding_window_logits(segmenter, image, resolution, stride, num_classes)
    resized = resize(image[0], (resolution, resolution)).unsqueeze(0)
    return upsample_logits(segmenter(resized), (height, width)).float()
