"""The DETR encoders: input projection, RT-DETR's hybrid encoder (AIFI + CCFM), DINO's deformable encoder and the
light presets' none.

Every encoder maps a list of ``hidden_dim``-channel NCHW maps (finest first) to the same number of maps of the same
sizes, so the detector can append an extra level (the frozen foundation model's stride-64 tokens) for the encoder's
fusion and drop it before the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.heads.detr.common import ConvNormAct, sincos_position_2d
from vfmkit.models.necks.msdeform_attn import MSDeformAttn


class InputProjection(nn.Module):
    """Feature-source levels -> ``hidden_dim`` channels (1x1 conv + norm), plus extra levels by stride-2 3x3 convs
    (the first from the coarsest source map, as DINO) and an optional projection of the frozen-FM level.

    Args:
        in_channels: channels of each source level, finest first.
        hidden_dim: output channels.
        num_levels: levels out (>= len(in_channels)).
        norm: ``gn`` or ``bn``.
        extra_channels: channels of the frozen-FM level (None: no such level).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        hidden_dim: int,
        num_levels: int,
        norm: str = "gn",
        extra_channels: int | None = None,
    ):
        super().__init__()
        self.proj = nn.ModuleList(ConvNormAct(c, hidden_dim, 1, norm=norm, act=False) for c in in_channels)
        self.downsample = nn.ModuleList(
            ConvNormAct(in_channels[-1] if i == 0 else hidden_dim, hidden_dim, 3, 2, norm=norm, act=False)
            for i in range(num_levels - len(in_channels))
        )
        self.fm_proj = ConvNormAct(extra_channels, hidden_dim, 1, norm=norm, act=False) if extra_channels else None

    def forward(self, maps: Sequence[torch.Tensor], fm_map: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Source maps (B, C_l, H_l, W_l) [+ the FM map (B, D, h, w)] -> ``num_levels`` [+ 1] maps (B, hidden, ., .)."""
        levels = [proj(x) for proj, x in zip(self.proj, maps, strict=True)]
        source = maps[-1]
        for conv in self.downsample:
            source = conv(source)
            levels.append(source)
        if self.fm_proj is not None:
            if fm_map is None:
                raise ValueError("this detector has a frozen foundation-model level: pass its map")
            levels.append(self.fm_proj(fm_map))
        return levels


class NoEncoder(nn.Module):
    """The light presets' "encoder": the levels pass unchanged (the ViT and the projector already mixed them)."""

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``num_levels`` maps (B, hidden, H_l, W_l) -> the same maps."""
        return list(levels)


class TransformerEncoderLayer(nn.Module):
    """Post-norm self-attention + FFN (RT-DETR's AIFI layer); positions added to queries and keys."""

    def __init__(self, dim: int, nheads: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, dim_feedforward), nn.Linear(dim_feedforward, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """src (B, N, dim), pos (1 or B, N, dim) -> (B, N, dim)."""
        q = k = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(q, k, src, need_weights=False)[0]))
        ffn = self.linear2(self.dropout(F.gelu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class RepVggBlock(nn.Module):
    """3x3 conv-norm + 1x1 conv-norm, summed, SiLU (RepVGG's training-time form)."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv3 = ConvNormAct(channels, channels, 3, norm=norm, act=False)
        self.conv1 = ConvNormAct(channels, channels, 1, norm=norm, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv3(x) + self.conv1(x))


class CSPRepLayer(nn.Module):
    """RT-DETR's CCFM fusion block: two 1x1 branches, RepVGG blocks on one, summed, 1x1 out."""

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, expansion: float, norm: str):
        super().__init__()
        hidden = max(int(out_ch * expansion), 1)
        self.conv1 = ConvNormAct(in_ch, hidden, 1, norm=norm)
        self.conv2 = ConvNormAct(in_ch, hidden, 1, norm=norm)
        self.blocks = nn.Sequential(*(RepVggBlock(hidden, norm) for _ in range(num_blocks)))
        self.conv3 = ConvNormAct(hidden, out_ch, 1, norm=norm) if hidden != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.blocks(self.conv1(x)) + self.conv2(x))


class HybridEncoder(nn.Module):
    """RT-DETR's efficient hybrid encoder: AIFI (intra-scale self-attention with 2-D sine-cosine positions) on the
    chosen levels, then CCFM (cross-scale fusion: a top-down FPN and a bottom-up PAN of CSP-RepVGG blocks).

    Args:
        hidden_dim: channels in and out.
        num_levels: maps in and out.
        nheads, dim_feedforward, dropout: AIFI layer settings.
        enc_layers: AIFI layers per chosen level.
        use_encoder_idx: levels AIFI runs on (RT-DETR: the coarsest of three, index 2).
        csp_blocks: RepVGG blocks per fusion block.
        expansion: width ratio inside the fusion blocks.
        norm: ``gn`` or ``bn``.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_levels: int,
        nheads: int,
        dim_feedforward: int,
        dropout: float,
        enc_layers: int,
        use_encoder_idx: Sequence[int],
        csp_blocks: int,
        expansion: float,
        norm: str,
    ):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = list(use_encoder_idx)
        self.aifi = nn.ModuleList(
            nn.ModuleList(
                TransformerEncoderLayer(hidden_dim, nheads, dim_feedforward, dropout) for _ in range(enc_layers)
            )
            for _ in self.use_encoder_idx
        )
        links = num_levels - 1
        self.lateral_convs = nn.ModuleList(ConvNormAct(hidden_dim, hidden_dim, 1, norm=norm) for _ in range(links))
        self.fpn_blocks = nn.ModuleList(
            CSPRepLayer(2 * hidden_dim, hidden_dim, csp_blocks, expansion, norm) for _ in range(links)
        )
        self.downsample_convs = nn.ModuleList(
            ConvNormAct(hidden_dim, hidden_dim, 3, 2, norm=norm) for _ in range(links)
        )
        self.pan_blocks = nn.ModuleList(
            CSPRepLayer(2 * hidden_dim, hidden_dim, csp_blocks, expansion, norm) for _ in range(links)
        )

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``num_levels`` maps (B, hidden, H_l, W_l), finest first -> fused maps of the same shapes."""
        levels = list(levels)
        for layers, index in zip(self.aifi, self.use_encoder_idx, strict=True):
            x = levels[index]
            b, c, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            pos = sincos_position_2d(h, w, c, device=x.device).to(x.dtype)
            for layer in layers:
                tokens = layer(tokens, pos)
            levels[index] = tokens.transpose(1, 2).reshape(b, c, h, w)
        return self._fuse(levels)

    def _fuse(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """CCFM: top-down (coarse to fine) then bottom-up (fine to coarse)."""
        count = len(levels)
        inner = [levels[-1]]
        for step, index in enumerate(range(count - 1, 0, -1)):
            high = self.lateral_convs[step](inner[0])
            inner[0] = high
            low = levels[index - 1]
            upsampled = F.interpolate(high, size=low.shape[-2:], mode="nearest")
            inner.insert(0, self.fpn_blocks[step](torch.cat([upsampled, low], dim=1)))
        outs = [inner[0]]
        for step in range(count - 1):
            down = self.downsample_convs[step](outs[-1])
            outs.append(self.pan_blocks[step](torch.cat([down, inner[step + 1]], dim=1)))
        return outs


class DeformableEncoderLayer(nn.Module):
    """Post-norm multi-scale deformable self-attention + FFN (Deformable DETR / DINO encoder layer)."""

    def __init__(self, dim: int, dim_feedforward: int, dropout: float, n_levels: int, nheads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, n_levels, nheads, n_points)
        self.linear1, self.linear2 = nn.Linear(dim, dim_feedforward), nn.Linear(dim_feedforward, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, pos, reference_points, shapes) -> torch.Tensor:
        """src (B, S, dim), pos (B or 1, S, dim), reference_points (1, S, L, 2) -> (B, S, dim)."""
        attn = self.self_attn(src + pos, reference_points, src, shapes)
        src = self.norm1(src + self.dropout(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class DeformableEncoder(nn.Module):
    """DINO's encoder: ``enc_layers`` deformable self-attention layers over all levels at once, with normalised
    sine-cosine positions plus a learned per-level embedding; each token's reference point is its cell centre.

    Args:
        hidden_dim: channels in and out.
        num_levels: maps in and out.
        nheads, n_points, dim_feedforward, dropout, enc_layers: layer settings.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_levels: int,
        nheads: int,
        n_points: int,
        dim_feedforward: int,
        dropout: float,
        enc_layers: int,
    ):
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(num_levels, hidden_dim).normal_())
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(hidden_dim, dim_feedforward, dropout, num_levels, nheads, n_points)
            for _ in range(enc_layers)
        )

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``num_levels`` maps (B, hidden, H_l, W_l) -> encoded maps of the same shapes."""
        shapes = [(int(x.shape[-2]), int(x.shape[-1])) for x in levels]
        src = torch.cat([x.flatten(2).transpose(1, 2) for x in levels], dim=1)
        device, dtype = src.device, src.dtype
        pos = torch.cat(
            [
                sincos_position_2d(h, w, src.shape[-1], normalize=True, device=device).to(dtype) + self.level_embed[lvl]
                for lvl, (h, w) in enumerate(shapes)
            ],
            dim=1,
        )
        centres = []
        for h, w in shapes:
            ys, xs = torch.meshgrid(
                (torch.arange(h, device=device, dtype=dtype) + 0.5) / h,
                (torch.arange(w, device=device, dtype=dtype) + 0.5) / w,
                indexing="ij",
            )
            centres.append(torch.stack([xs.flatten(), ys.flatten()], dim=-1))
        reference = torch.cat(centres)[None, :, None, :].expand(1, -1, len(shapes), 2)
        for layer in self.layers:
            src = layer(src, pos, reference, shapes)
        out, start = [], 0
        for x, (h, w) in zip(levels, shapes, strict=True):
            out.append(src[:, start : start + h * w].transpose(1, 2).reshape(x.shape))
            start += h * w
        return out
