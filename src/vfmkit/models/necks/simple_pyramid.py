"""ViTDet's simple feature pyramid (Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection",
ECCV 2022) over any vfmkit backbone, the cheap alternative to the ViT-Adapter.

One stride-p map (p = patch size; the backbone's final patch features, or a learned softmax-weighted mix of chosen
blocks' outputs) is resized to stride 16 when p != 16 (e.g. DINOv2's 14), then turned into strides 4/8/16/32 by
two / one transposed convs, identity and 2x2 max-pooling; each level gets a 1x1 and a 3x3 conv with norms. This is
also what TAO's ``D2RADIO`` does for OneFormer. Works with RADIO in ViTDet (windowed) mode.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from vfmkit.models.backbones.base import Backbone, BackboneOutput, resolve_block_indices, tokens_to_nchw
from vfmkit.models.necks.common import (
    NECK_STRIDES,
    BackboneNeck,
    NeckOutput,
    SummaryFusion,
    freeze,
    level_sizes,
    make_norm2d,
    resize_to,
)


def backbone_pass(
    backbone: Backbone, images: torch.Tensor, indices: Sequence[int] | None
) -> tuple[BackboneOutput, list[torch.Tensor]]:
    """The final output and the chosen blocks' patch maps, in one backbone pass where the backbone allows it.

    RADIO: ``forward_intermediates(return_final=True)`` (ViTDet mode and intermediate normalizers included). Other
    backbones with the token-level API: embed -> blocks (keeping the chosen outputs) -> finish. Otherwise (e.g. timm
    EVA): ``forward`` plus ``forward_intermediates`` (two passes).

    Args:
        backbone: a vfmkit backbone.
        images: (B, 3, H, W) float RGB in [0, 1].
        indices: block indices (negatives from the end); None or empty -> no intermediates.

    Returns:
        The :class:`BackboneOutput` and one (B, D, h, w) map per chosen block, in block order.
    """
    if not indices:
        return backbone(images), []
    if "return_final" in inspect.signature(backbone.forward_intermediates).parameters:
        final, maps = backbone.forward_intermediates(images, indices=list(indices), return_final=True)
        return final, maps
    try:
        blocks = backbone.token_blocks()
    except (AttributeError, ValueError):
        return backbone(images), backbone.forward_intermediates(images, indices=list(indices))
    keep = set(resolve_block_indices(list(indices), len(blocks)))
    tokens, grid = backbone.embed_tokens(images)
    maps = []
    for index, block in enumerate(blocks):
        tokens = backbone.run_block(block, tokens)
        if index in keep:
            maps.append(tokens_to_nchw(tokens[:, backbone.num_prefix_tokens :], grid))
    return backbone.finish_tokens(tokens, grid), maps


def _scale_stage(dim: int, stride: int, norm: str) -> tuple[nn.Module, int]:
    """The resampling from stride 16 to ``stride`` and its output channels."""
    if stride == 4:
        return nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, 2),
            make_norm2d(norm, dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2),
        ), dim // 4
    if stride == 8:
        return nn.ConvTranspose2d(dim, dim // 2, 2, 2), dim // 2
    if stride == 16:
        return nn.Identity(), dim
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True), dim


class SimpleFeaturePyramid(BackboneNeck):
    """ViTDet simple feature pyramid neck.

    Args:
        backbone: any vfmkit backbone.
        out_channels: channels of every output level (256, ViTDet's default; the stride-4 3x3 conv costs
            out_channels^2 * 9 MACs per stride-4 pixel, so the backbone width would be ~9x dearer at ViT-B).
        indices: None -> the backbone's final patch features; block indices -> their outputs mixed with learned
            softmax weights (``layer_weights``).
        norm: norm after each conv: ``ln`` (channel LayerNorm, as ViTDet), ``bn``, ``syncbn`` or ``gn``.
        summary_fusion: add a Linear projection of the backbone summary to every level.
        freeze_backbone: no gradients into the backbone; it then stays in eval mode when the neck trains.
        strides: the levels built and returned, finest first, a subset of 4/8/16/32 (default all four; a detector
            that reads 8/16/32 skips the stride-4 level, the dearest one).
    """

    def __init__(
        self,
        backbone: Backbone,
        out_channels: int = 256,
        indices: Sequence[int] | None = None,
        norm: str = "ln",
        summary_fusion: bool = False,
        freeze_backbone: bool = False,
        strides: Sequence[int] = NECK_STRIDES,
    ):
        super().__init__()
        dim = backbone.embed_dim
        if dim % 4:
            raise ValueError(f"the simple pyramid needs a width divisible by 4, got {dim}")
        self.strides = tuple(int(s) for s in strides)
        if (
            not self.strides
            or any(s not in NECK_STRIDES for s in self.strides)
            or list(self.strides) != sorted(set(self.strides))
        ):
            raise ValueError(f"strides must be ascending values of {list(NECK_STRIDES)}, got {list(strides)}")
        self.backbone = backbone
        self.out_channels = out_channels
        self.indices = list(indices) if indices else None
        if self.indices:
            resolve_block_indices(self.indices, backbone.num_blocks)  # validates
        self.layer_weights = nn.Parameter(torch.zeros(len(self.indices))) if self.indices else None
        self.scales = nn.ModuleList()
        self.convs = nn.ModuleList()
        for stride in self.strides:
            scale, channels = _scale_stage(dim, stride, norm)
            self.scales.append(scale)
            self.convs.append(
                nn.Sequential(
                    nn.Conv2d(channels, self.out_channels, 1, bias=False),
                    make_norm2d(norm, self.out_channels),
                    nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1, bias=False),
                    make_norm2d(norm, self.out_channels),
                )
            )
        levels = [self.out_channels] * len(self.strides)
        self.summary_fusion = SummaryFusion(backbone.summary_dim, levels) if summary_fusion else None
        if freeze_backbone:
            freeze(backbone)

    def forward(self, images: torch.Tensor) -> NeckOutput:
        """Pyramid and summary of one backbone pass.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1]; H, W multiples of the backbone's resolution step.

        Returns:
            :class:`NeckOutput`: features (B, out_channels, ceil(H/s), ceil(W/s)) for s in ``strides`` (4, 8, 16,
            32 by default); summary (B, summary_dim).
        """
        final, maps = backbone_pass(self.backbone, images, self.indices)
        if self.layer_weights is None:
            base = final.spatial()
        else:
            weights = self.layer_weights.softmax(0)
            base = sum(w * m for w, m in zip(weights, maps, strict=True))
        base = resize_to(base, level_sizes(*images.shape[-2:], (16,))[0])  # stride p -> stride 16 (patch 14, 8, ...)
        sizes = level_sizes(*images.shape[-2:], self.strides)
        features = [
            resize_to(conv(scale(base)), size) for scale, conv, size in zip(self.scales, self.convs, sizes, strict=True)
        ]
        if self.summary_fusion is not None:
            features = self.summary_fusion(features, final.summary)
        return NeckOutput(features=features, summary=final.summary)
