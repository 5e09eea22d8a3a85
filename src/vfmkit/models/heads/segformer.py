"""SegFormer's all-MLP decode head (Xie et al., 2021) on a 4-level pyramid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SegFormerHead(nn.Module):
    """Per level a linear projection (1x1 conv) to ``embed_dim``, all upsampled to the finest level (stride 4),
    concatenated, fused by a 1x1 conv + BatchNorm + ReLU, dropout, then a 1x1 classifier.

    Args:
        in_channels: channels of the four input levels (strides 4, 8, 16, 32).
        num_classes: K.
        embed_dim: decoder width.
        dropout: dropout before the classifier.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, embed_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.linear = nn.ModuleList(nn.Conv2d(c, embed_dim, kernel_size=1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(embed_dim * len(in_channels), embed_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Four NCHW maps (strides 4, 8, 16, 32) -> logits (B, K, H/4, W/4)."""
        size = features[0].shape[-2:]
        projected = [
            F.interpolate(proj(x), size=size, mode="bilinear", align_corners=False) if i else proj(x)
            for i, (proj, x) in enumerate(zip(self.linear, features, strict=True))
        ]
        return self.classifier(self.dropout(self.fuse(torch.cat(projected[::-1], dim=1))))


class Segmenter(nn.Module):
    """``images (B, 3, H, W) in [0, 1] -> logits (B, K, H/4, W/4)``: backbone -> neck (4-level pyramid) ->
    SegFormer head.

    Args:
        backbone: any vfmkit backbone (owned by the neck).
        num_classes: K.
        neck: ``vit_adapter`` or ``simple_pyramid`` (:func:`vfmkit.models.necks.build_neck`).
        neck_channels: pyramid channels (None: the neck's default).
        summary_fusion: add the projected backbone summary to every pyramid level.
        freeze_backbone: no gradients into the backbone (the neck and head still train).
        decoder_channels: SegFormer head width.
        dropout: dropout before the classifier.

    Raises:
        ConfigurationError: a neck that does not support the backbone.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        neck: str = "vit_adapter",
        neck_channels: int | None = None,
        summary_fusion: bool = True,
        freeze_backbone: bool = True,
        decoder_channels: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        from vfmkit.models.necks import build_neck

        options = {"summary_fusion": summary_fusion, "freeze_backbone": freeze_backbone}
        if neck_channels is not None:
            options["out_channels"] = neck_channels
        self.neck = build_neck(neck, backbone, **options)
        channels = getattr(self.neck, "out_channels", neck_channels or backbone.embed_dim)
        self.head = SegFormerHead([channels] * 4, num_classes, decoder_channels, dropout)

    @property
    def backbone(self) -> nn.Module:
        return self.neck.backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(images).features)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, K, h, w) logits to ``size`` (H, W)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
