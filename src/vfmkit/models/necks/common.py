"""Pieces shared by the dense necks: the output type, 2-D norm choice, summary fusion and resizing helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.backbones.base import BackboneOwner, freeze, is_frozen

BackboneNeck = BackboneOwner
"""Base of the necks that own a ``backbone`` (see :class:`~vfmkit.models.backbones.base.BackboneOwner`)."""

__all__ = ["BackboneNeck", "freeze", "is_frozen"]

NECK_STRIDES = (4, 8, 16, 32)
"""Strides of the four pyramid levels every neck outputs, finest first."""

NORMS = ("bn", "syncbn", "gn", "ln")


@dataclass
class NeckOutput:
    """Output of a dense neck.

    Attributes:
        features: four float NCHW maps (B, C_out, ceil(H/s), ceil(W/s)) for s = 4, 8, 16, 32, finest first.
        summary: (B, summary_dim) the backbone's global summary of the same pass.
    """

    features: list[torch.Tensor]
    summary: torch.Tensor


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ViTDet's "LN" norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_norm2d(kind: str, channels: int) -> nn.Module:
    """A norm for NCHW maps.

    Args:
        kind: ``bn`` (BatchNorm2d), ``syncbn`` (SyncBatchNorm, multi-GPU), ``gn`` (GroupNorm with gcd(32, C) groups,
            batch-size independent) or ``ln`` (channel LayerNorm).
        channels: C.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "syncbn":
        return nn.SyncBatchNorm(channels)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "ln":
        return LayerNorm2d(channels, eps=1e-6)
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def level_sizes(height: int, width: int, strides: Sequence[int] = NECK_STRIDES) -> list[tuple[int, int]]:
    """(ceil(H/s), ceil(W/s)) per stride: the sizes stride-2 convs with padding 1 produce."""
    return [(-(-height // s), -(-width // s)) for s in strides]


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of an NCHW map to ``size``; returned unchanged when it already fits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SummaryFusion(nn.Module):
    """Adds a Linear projection of the backbone summary, broadcast over space, to every pyramid level.

    Args:
        summary_dim: C of the summary (B, C).
        channels: output channels of each level.
    """

    def __init__(self, summary_dim: int, channels: Sequence[int]):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(summary_dim, c) for c in channels)

    def forward(self, features: list[torch.Tensor], summary: torch.Tensor) -> list[torch.Tensor]:
        """features: NCHW maps; summary: (B, summary_dim) -> the maps plus the projected summary."""
        return [f + proj(summary.to(f.dtype))[:, :, None, None] for f, proj in zip(features, self.proj, strict=True)]
