"""The sine position encoding of DETR / Mask2Former (``PositionEmbeddingSine`` with ``normalize=True``)."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Fixed 2-D sine/cosine position encoding of a feature map, normalised to the map's extent.

    Position (y, x) of pixel (i, j) is ``(i + 1) / H * scale`` and ``(j + 1) / W * scale`` (the cumulative sum of an
    all-valid mask, as the reference computes it); each is encoded with ``num_pos_feats`` sines and cosines of
    frequencies ``temperature ** (2 * (k // 2) / num_pos_feats)``; the y features come first.

    Args:
        num_pos_feats: channels per axis; the encoding has ``2 * num_pos_feats`` channels (= hidden_dim).
        temperature: frequency base.
        scale: range of the normalised positions (default 2 pi).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: int = 10000, scale: float | None = None):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi if scale is None else scale

    def encoding(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The encoding of an (height, width) map: (1, 2 * num_pos_feats, height, width). Depends only on the size,
        so an exported graph holds it as a constant."""
        eps = 1e-6
        y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=device)[:, None].expand(height, width)
        x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=device)[None, :].expand(height, width)
        y_embed = y_embed / (height + eps) * self.scale
        x_embed = x_embed / (width + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, None] / dim_t
        pos_y = y_embed[:, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
        pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()), dim=3).flatten(2)
        return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)[None].to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) map -> its encoding (1, 2 * num_pos_feats, H, W) (broadcast over the batch)."""
        return self.encoding(int(x.shape[-2]), int(x.shape[-1]), x.device, x.dtype)
