"""The segmenter: backbone -> neck (4-level pyramid) -> SegFormer head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.backbones.base import Backbone
from vfmkit.models.heads.segformer import SegFormerHead
from vfmkit.models.necks import build_neck
from vfmkit.spec.segment import SegmentModelSpec


class Segmenter(nn.Module):
    """``images (B, 3, H, W) in [0, 1] -> logits (B, K, H/4, W/4)``.

    Args:
        backbone: any vfmkit backbone.
        num_classes: K.
        spec: neck kind, widths, summary fusion, freezing, decoder width and dropout.
    """

    def __init__(self, backbone: Backbone, num_classes: int, spec: SegmentModelSpec):
        super().__init__()
        options = {"summary_fusion": spec.summary_fusion, "freeze_backbone": spec.freeze_backbone}
        if spec.neck_channels is not None:
            options["out_channels"] = spec.neck_channels
        self.neck = build_neck(spec.neck, backbone, **options)
        channels = getattr(self.neck, "out_channels", spec.neck_channels or backbone.embed_dim)
        self.head = SegFormerHead([channels] * 4, num_classes, spec.decoder_channels, spec.dropout)

    @property
    def backbone(self) -> Backbone:
        return self.neck.backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(images).features)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, K, h, w) logits to ``size`` (H, W)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class ExportableSegmenter(nn.Module):
    """The exported graph: ``image`` (B, 3, H, W) float RGB in [0, 1] -> ``logits`` (B, K, H, W) at input size."""

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return upsample_logits(self.segmenter(image), image.shape[-2:])
