"""What a DETR detector reads: the main feature source (a neck's levels or a timm CNN) and the optional frozen
foundation-model side branch (TAO RT-DETR ``frozen_fm``, Frozen-DETR).

A feature source is an ``nn.Module`` with ``strides`` and ``channels`` lists whose ``forward(images)`` returns one
NCHW map per stride, finest first; images are float RGB (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.backbones.base import Backbone, BackboneOwner, freeze
from vfmkit.models.necks.common import NECK_STRIDES, resize_to


class NeckLevels(nn.Module):
    """The levels of a dense neck (``build_neck``: strides 4/8/16/32, or the neck's own ``strides``) at the chosen
    strides.

    Args:
        neck: a vfmkit neck (``forward(images) -> NeckOutput``) with ``out_channels``.
        strides: the strides kept, finest first, each one the neck builds.
    """

    def __init__(self, neck: nn.Module, strides: Sequence[int]):
        super().__init__()
        available = tuple(getattr(neck, "strides", NECK_STRIDES))  # a simple pyramid can build just what is read
        missing = [s for s in strides if s not in available]
        if missing:
            raise ValueError(f"the neck builds strides {list(available)}, not {missing}")
        self.neck = neck
        self.strides = [int(s) for s in strides]
        self.channels = [int(neck.out_channels)] * len(self.strides)
        self._indices = [available.index(s) for s in self.strides]

    @property
    def backbone(self) -> Backbone:
        """The neck's backbone (for layer-wise lr decay and freezing)."""
        return self.neck.backbone

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) in [0, 1] -> maps (B, out_channels, ceil(H/s), ceil(W/s)) per kept stride."""
        features = self.neck(images).features
        return [features[i] for i in self._indices]


def foundation_input_size(height: int, width: int, scale: float, backbone: Backbone) -> tuple[int, int]:
    """Input size of the frozen foundation model: (H, W) x ``scale`` rounded to its resolution step (at least one
    step), or its only resolution for fixed-resolution models."""
    prep = backbone.preprocessing
    if prep.fixed_resolution:
        return tuple(prep.preferred_resolution)
    step = prep.resolution_step
    return max(step, round(height * scale / step) * step), max(step, round(width * scale / step) * step)


def pool_to(fmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample (B, D, h, w) to ``size``: max-pooling when the size divides (TAO's 2x2 max-pool), else bilinear."""
    h, w = int(fmap.shape[-2]), int(fmap.shape[-1])  # Python ints: static kernel sizes in an exported graph
    if (h, w) == tuple(size):
        return fmap
    if h % size[0] == 0 and w % size[1] == 0:
        kernel = (h // size[0], w // size[1])
        return F.max_pool2d(fmap, kernel_size=kernel, stride=kernel)
    return resize_to(fmap, size)


class FrozenFoundationBranch(BackboneOwner):
    """A frozen vfmkit backbone beside the detector: its summary feeds the decoder's image queries, its patch tokens
    an extra encoder level at ``stride`` (64) that enriches the fusion.

    The image is resized by ``input_scale`` (TAO: 0.5, so stride-16 tokens land at stride 32 of the input) to the
    backbone's resolution step; the token map is then max-pooled (or resized) to ceil(H/stride) x ceil(W/stride).
    The backbone never trains and stays in eval mode (:class:`BackboneOwner`); its pass runs without gradients.

    Args:
        backbone: any vfmkit backbone (frozen here).
        input_scale: input resize factor.
        stride: stride of the extra level relative to the detector input.
    """

    def __init__(self, backbone: Backbone, input_scale: float = 0.5, stride: int = 64):
        super().__init__()
        if not 0 < input_scale <= 4:
            raise ValueError(f"frozen_fm input_scale must be in (0, 4], got {input_scale}")
        self.backbone = backbone
        self.input_scale = float(input_scale)
        self.stride = int(stride)
        self.summary_dim = int(backbone.summary_dim)
        self.feature_dim = int(backbone.embed_dim)
        freeze(backbone)
        backbone.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [0, 1] -> ``summary`` (B, summary_dim), ``level`` (B, feature_dim, ceil(H/stride),
        ceil(W/stride))."""
        height, width = int(images.shape[-2]), int(images.shape[-1])
        size = foundation_input_size(height, width, self.input_scale, self.backbone)
        if tuple(size) != (height, width):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            out = self.backbone(images)
        target = (math.ceil(height / self.stride), math.ceil(width / self.stride))
        return out.summary.detach(), pool_to(out.spatial().detach(), target)
