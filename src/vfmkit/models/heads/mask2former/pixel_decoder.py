"""Mask2Former's multi-scale deformable-attention pixel decoder (``MSDeformAttnPixelDecoder``) on vfmkit's
plain-PyTorch :class:`~vfmkit.models.necks.msdeform_attn.MSDeformAttn`.

The three coarsest pyramid levels (strides 8/16/32) are projected to ``conv_dim`` (1x1 conv + GroupNorm), given a
sine position encoding plus a learned level embedding, and mixed by ``transformer_enc_layers`` deformable-attention
encoder layers (every position attends to ``n_points`` samples per head in every level). The finer levels (stride 4
for a 4/8/16/32 pyramid) are added FPN-style (lateral 1x1 conv + GroupNorm, bilinearly upsampled coarser map, 3x3
conv + GroupNorm + ReLU); a 1x1 conv of the finest map gives the ``mask_features`` the queries are dotted with.
Module names follow the reference (``input_proj``, ``transformer.level_embed``, ``transformer.encoder.layers``,
``mask_features``) so its structure maps onto published weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.heads.mask2former.position import PositionEmbeddingSine
from vfmkit.models.necks.common import make_norm2d
from vfmkit.models.necks.msdeform_attn import MSDeformAttn
from vfmkit.models.necks.vit_adapter import reference_points


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then a ReLU FFN.

    Args:
        d_model: channels.
        d_ffn: FFN hidden width.
        dropout: dropout after attention and in the FFN.
        n_levels: levels attended to.
        n_heads: attention heads.
        n_points: samples per head and level.
    """

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.0,
        n_levels: int = 3,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = nn.ReLU(inplace=True)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, reference: torch.Tensor, shapes: Sequence[tuple[int, int]]
    ) -> torch.Tensor:
        """src, pos: (B, S, C) (pos may have batch 1); reference: (1, S, L, 2) in [0, 1] -> (B, S, C)."""
        attended = self.self_attn(src + pos, reference, src, shapes)
        src = self.norm1(src + self.dropout1(attended))
        hidden = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(hidden))


class MSDeformAttnEncoderOnly(nn.Module):
    """The stack of encoder layers and the learned level embedding (reference ``MSDeformAttnTransformerEncoderOnly``).

    Args:
        d_model, n_heads, num_layers, d_ffn, dropout, n_levels, n_points: as in :class:`MSDeformAttnEncoderLayer`.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_heads: int = 8,
        num_layers: int = 6,
        d_ffn: int = 1024,
        dropout: float = 0.0,
        n_levels: int = 3,
        n_points: int = 4,
    ):
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            MSDeformAttnEncoderLayer(d_model, d_ffn, dropout, n_levels, n_heads, n_points) for _ in range(num_layers)
        )
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: Sequence[torch.Tensor], pos_embeds: Sequence[torch.Tensor]) -> torch.Tensor:
        """srcs: L maps (B, C, H_l, W_l); pos_embeds: their encodings (1, C, H_l, W_l) -> (B, sum H_l W_l, C)."""
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1) for i, p in enumerate(pos_embeds)], 1
        )
        reference = reference_points(shapes, src.device).to(src.dtype).expand(-1, -1, len(shapes), -1)
        for layer in self.encoder.layers:
            src = layer(src, pos, reference, shapes)
        return src


def _projection(in_channels: int, conv_dim: int, norm: str) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, conv_dim, kernel_size=1)
    nn.init.xavier_uniform_(conv.weight, gain=1)
    nn.init.constant_(conv.bias, 0)
    return nn.Sequential(conv, make_norm2d(norm, conv_dim))


def _c2_xavier_fill(conv: nn.Conv2d) -> nn.Conv2d:
    """detectron2's ``c2_xavier_fill``: kaiming uniform with a = 1, zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)
    return conv


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder: a 4-level pyramid in, ``mask_features`` at the finest stride and three multi-scale maps out.

    Args:
        in_channels: channels of the input levels, finest first (strides ``in_strides``).
        in_strides: strides of the input levels, finest first (default 4/8/16/32, the vfmkit necks' pyramid).
        conv_dim: channels of the transformer and FPN maps (``conv_dim``).
        mask_dim: channels of ``mask_features`` (``mask_dim``).
        norm: norm of the projections and FPN convs (``gn``: GroupNorm, as the reference).
        transformer_enc_layers: deformable encoder layers.
        transformer_nheads: deformable attention heads.
        transformer_dim_feedforward: encoder FFN width.
        transformer_n_points: deformable samples per head and level.
        dropout: encoder dropout.
        common_stride: stride of ``mask_features`` (the finest FPN output).
        transformer_levels: how many of the coarsest levels go through the transformer.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int] = (4, 8, 16, 32),
        conv_dim: int = 256,
        mask_dim: int = 256,
        norm: str = "gn",
        transformer_enc_layers: int = 6,
        transformer_nheads: int = 8,
        transformer_dim_feedforward: int = 1024,
        transformer_n_points: int = 4,
        dropout: float = 0.0,
        common_stride: int = 4,
        transformer_levels: int = 3,
    ):
        super().__init__()
        if len(in_channels) != len(in_strides) or len(in_channels) < transformer_levels:
            raise ValueError(f"{len(in_channels)} input channels for strides {list(in_strides)}")
        self.in_strides = list(in_strides)
        self.num_levels = transformer_levels
        self.conv_dim, self.mask_dim = conv_dim, mask_dim
        coarse = list(in_channels[-transformer_levels:])
        self.input_proj = nn.ModuleList(_projection(c, conv_dim, norm) for c in reversed(coarse))
        self.transformer = MSDeformAttnEncoderOnly(
            conv_dim,
            transformer_nheads,
            transformer_enc_layers,
            transformer_dim_feedforward,
            dropout,
            transformer_levels,
            transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)
        self.mask_features = _c2_xavier_fill(nn.Conv2d(conv_dim, mask_dim, kernel_size=1))
        coarsest_fpn = min(self.in_strides[-transformer_levels:])
        self.num_fpn_levels = max(0, int(math.log2(coarsest_fpn) - math.log2(common_stride)))
        fine = list(in_channels[: self.num_fpn_levels])
        # top-down order (coarse to fine), as the reference stores them
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(_c2_xavier_fill(nn.Conv2d(c, conv_dim, 1, bias=False)), make_norm2d(norm, conv_dim))
            for c in reversed(fine)
        )
        self.output_convs = nn.ModuleList(
            nn.Sequential(
                _c2_xavier_fill(nn.Conv2d(conv_dim, conv_dim, 3, padding=1, bias=False)),
                make_norm2d(norm, conv_dim),
                nn.ReLU(inplace=True),
            )
            for _ in fine
        )

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Decode a pyramid.

        Args:
            features: the input levels, finest first: (B, in_channels[i], H / s_i, W / s_i).

        Returns:
            ``(mask_features, multi_scale_features)``: mask_features (B, mask_dim, H / common_stride,
            W / common_stride); multi_scale_features the three transformer levels, coarsest first (strides 32, 16, 8
            for the default pyramid), each (B, conv_dim, h, w).
        """
        coarse = list(features[-self.num_levels :])[::-1]
        srcs = [proj(x) for proj, x in zip(self.input_proj, coarse, strict=True)]
        pos = [self.pe_layer(x) for x in srcs]
        memory = self.transformer(srcs, pos)
        outs, start = [], 0
        for src in srcs:
            h, w = src.shape[-2:]
            outs.append(memory[:, start : start + h * w].transpose(1, 2).reshape(src.shape[0], -1, h, w))
            start += h * w
        fine = list(features[: self.num_fpn_levels])[::-1]
        for x, lateral, output in zip(fine, self.lateral_convs, self.output_convs, strict=True):
            lat = lateral(x)
            up = F.interpolate(outs[-1], size=lat.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(output(lat + up))
        return self.mask_features(outs[-1]), outs[: self.num_levels]
