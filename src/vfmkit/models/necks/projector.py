"""The multi-layer projector of the light DETRs (LW-DETR, Chen et al. 2024; RF-DETR): a plain ViT's intermediate
feature maps (e.g. after blocks 3/6/9/12 of 12) concatenated along channels and projected to one stride-16 map "P4",
optionally also a stride-8 "P3" (a transposed conv) and a stride-32 "P5" (a stride-2 conv).

Per output level: a 1x1 conv of the concatenated maps to ``out_channels`` with a channel LayerNorm and GELU (shared by
the levels), the level's resampling, then a residual 3x3 conv block (conv-LN-GELU-conv-LN). LayerNorm, not
BatchNorm, as LW-DETR (batch-size independent). No transformer encoder follows: the ViT already mixed the image
globally. Written from the papers' description, not from their code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vfmkit.models.backbones.base import Backbone, resolve_block_indices
from vfmkit.models.necks.common import BackboneNeck, NeckOutput, freeze, level_sizes, make_norm2d, resize_to
from vfmkit.models.necks.simple_pyramid import backbone_pass

PROJECTOR_STRIDES = (8, 16, 32)
"""The levels the projector can build: P3, P4, P5."""


def default_tap_blocks(num_blocks: int, count: int = 4) -> list[int]:
    """``count`` evenly spaced block indices ending with the last block (12 blocks: 2, 5, 8, 11, i.e. blocks
    3/6/9/12 counted from 1)."""
    count = max(1, min(count, num_blocks))
    return sorted({num_blocks * (k + 1) // count - 1 for k in range(count)})


class ResidualConvBlock(nn.Module):
    """x + LN(conv3x3(GELU(LN(conv3x3(x))))) on (B, C, H, W)."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            make_norm2d(norm, channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            make_norm2d(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _resample(channels: int, stride: int, norm: str) -> nn.Module:
    """Stride 16 -> ``stride``."""
    if stride == 8:
        return nn.Sequential(nn.ConvTranspose2d(channels, channels, 2, 2), make_norm2d(norm, channels), nn.GELU())
    if stride == 32:
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, 2, padding=1, bias=False), make_norm2d(norm, channels), nn.GELU()
        )
    return nn.Identity()


class MultiLayerProjector(BackboneNeck):
    """LW-DETR / RF-DETR projector neck.

    Args:
        backbone: a vfmkit ViT backbone (``forward_intermediates``); windowed attention works.
        out_channels: channels of every output level (the DETR width, 256).
        indices: the blocks whose outputs are concatenated (None: 4 evenly spaced, see :func:`default_tap_blocks`).
        strides: the levels built, ascending values of 8 / 16 / 32 (default P4 only).
        norm: ``ln`` (channel LayerNorm), ``gn``, ``bn`` or ``syncbn``.
        summary_fusion: refused (the projector reads block outputs, not the summary).
        freeze_backbone: no gradients into the backbone (it then stays in eval mode when the neck trains).

    Raises:
        ValueError: bad strides or indices, or ``summary_fusion``.
    """

    def __init__(
        self,
        backbone: Backbone,
        out_channels: int = 256,
        indices: Sequence[int] | None = None,
        strides: Sequence[int] = (16,),
        norm: str = "ln",
        summary_fusion: bool = False,
        freeze_backbone: bool = False,
    ):
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        if (
            not self.strides
            or any(s not in PROJECTOR_STRIDES for s in self.strides)
            or list(self.strides) != sorted(set(self.strides))
        ):
            raise ValueError(f"projector strides must be ascending values of {list(PROJECTOR_STRIDES)}, got {strides}")
        if summary_fusion:
            raise ValueError("the projector does not fuse the summary (summary_fusion applies to simple_pyramid)")
        self.backbone = backbone
        self.out_channels = int(out_channels)
        self.indices = resolve_block_indices(
            list(indices) if indices else default_tap_blocks(backbone.num_blocks), backbone.num_blocks
        )
        in_channels = backbone.embed_dim * len(self.indices)
        self.input_proj = nn.Sequential(
            nn.Conv2d(in_channels, self.out_channels, 1, bias=False), make_norm2d(norm, self.out_channels), nn.GELU()
        )
        self.levels = nn.ModuleList(
            nn.Sequential(_resample(self.out_channels, s, norm), ResidualConvBlock(self.out_channels, norm))
            for s in self.strides
        )
        if freeze_backbone:
            freeze(backbone)

    def forward(self, images: torch.Tensor) -> NeckOutput:
        """Projected levels of one backbone pass.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1]; H, W multiples of the backbone's resolution step.

        Returns:
            :class:`NeckOutput`: features (B, out_channels, ceil(H/s), ceil(W/s)) for s in ``strides``; the summary.
        """
        final, maps = backbone_pass(self.backbone, images, self.indices)
        base = resize_to(torch.cat(maps, dim=1), level_sizes(*images.shape[-2:], (16,))[0])  # patch 14 -> stride 16
        base = self.input_proj(base)
        sizes = level_sizes(*images.shape[-2:], self.strides)
        features = [resize_to(level(base), size) for level, size in zip(self.levels, sizes, strict=True)]
        return NeckOutput(features=features, summary=final.summary)
