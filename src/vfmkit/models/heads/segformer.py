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
