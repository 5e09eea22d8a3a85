"""The segment task's model: the spec mapped onto :class:`~vfmkit.models.heads.segformer.Segmenter`, and the
exported graph."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vfmkit.models.factory import load_backbone
from vfmkit.models.heads.segformer import Segmenter, upsample_logits
from vfmkit.tasks.segment.spec import SegmentSpec
from vfmkit.weights.rule import loader_arguments

__all__ = ["ExportableSegmenter", "Segmenter", "build_segmenter", "upsample_logits"]


def build_segmenter(spec: SegmentSpec, meta: dict[str, Any], pretrained: bool) -> Segmenter:
    """Backbone + neck + SegFormer head over ``meta["classes"]``. ``pretrained`` True loads the backbone's weights
    as the spec says (``model.pretrained``; a path loads its file), False loads none."""
    m = spec.model
    load_pretrained, _ = loader_arguments(m.backbone, m.pretrained, None, pretrained)
    backbone = load_backbone(m.backbone, pretrained=load_pretrained, vitdet_window_size=m.vitdet_window_size)
    return Segmenter(
        backbone,
        len(meta["classes"]),
        m.neck,
        m.neck_channels,
        m.summary_fusion,
        m.freeze_backbone,
        m.decoder_channels,
        m.dropout,
    )


class ExportableSegmenter(nn.Module):
    """The exported graph: ``image`` (B, 3, H, W) float RGB in [0, 1] -> ``logits`` (B, K, H, W) at input size."""

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return upsample_logits(self.segmenter(image), image.shape[-2:])
