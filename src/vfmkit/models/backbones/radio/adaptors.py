"""Teacher adaptor heads: a summary MLP on one cls token and a feature MLP on every patch token.

Key layouts match the published checkpoints:
- MLP v2: ``fc1``, ``blocks.{i}.{0: LayerNorm, 2: Linear}`` (residual, GELU between), ``final.{0: LayerNorm,
  2: Linear}``; optional ``pre_norm`` (LayerNorm + GELU).
- MLP v1: ``fc1``, ``norm``, ``inner.{3k: Linear, 3k+1: LayerNorm}`` (ReLU after each), ``fc2``.
- attn (C-RADIOv4 spatial heads): ``blocks.{0,1}`` timm ViT blocks, then ``mlp`` an MLP v2 with no inner blocks.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from vfmkit.models.backbones.base import AdaptorOutput
from vfmkit.models.backbones.radio.config import AdaptorConfig


class MLP2(nn.Module):
    """MLP v2: Linear in -> N residual (LayerNorm, GELU, Linear) -> LayerNorm, GELU, Linear out.

    With ``upsample_factor`` u > 1 the output has ``u * u * out_dim`` channels per token (see :func:`depth_to_space`).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_inner: int = 0,
        pre_norm: bool = False,
        upsample_factor: int = 1,
    ):
        super().__init__()
        self.pre_norm = nn.Sequential(nn.LayerNorm(in_dim), nn.GELU()) if pre_norm else nn.Identity()
        self.upsample_factor = upsample_factor
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim))
            for _ in range(num_inner)
        )
        self.final = nn.Sequential(
            nn.LayerNorm(hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim * upsample_factor**2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(self.pre_norm(x))
        for block in self.blocks:
            x = x + block(x)
        return self.final(x)


class MLP1(nn.Module):
    """MLP v1 (legacy): Linear, LayerNorm, ReLU, N x (Linear, LayerNorm, ReLU), Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_inner: int = 0, upsample_factor: int = 1):
        super().__init__()
        self.upsample_factor = upsample_factor
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.relu = nn.ReLU()
        layers: list[nn.Module] = []
        for _ in range(num_inner):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU()]
        self.inner = nn.Sequential(*layers)
        self.fc2 = nn.Linear(hidden_dim, out_dim * upsample_factor**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.inner(self.relu(self.norm(self.fc1(x)))))


class AttnFeatureHead(nn.Module):
    """C-RADIOv4 spatial head: two ViT blocks over the patch tokens (no prefix, no positions), then an MLP v2."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_heads: int = 16, upsample_factor: int = 1):
        super().__init__()
        self.upsample_factor = upsample_factor
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *(Block(in_dim, num_heads, qkv_bias=True, init_values=1e-5, norm_layer=norm) for _ in range(2))
        )
        self.mlp = MLP2(in_dim, hidden_dim, out_dim, num_inner=0, upsample_factor=upsample_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.blocks(x))


def build_mlp(spec: tuple[str, int, int, int, int], upsample_factor: int = 1, num_heads: int = 16) -> nn.Module:
    """An adaptor MLP from ``(version, in, hidden, out, num_inner)``."""
    version, in_dim, hidden_dim, out_dim, num_inner = spec
    if version == "v1":
        return MLP1(in_dim, hidden_dim, out_dim, num_inner, upsample_factor)
    if version == "v2":
        return MLP2(in_dim, hidden_dim, out_dim, num_inner, upsample_factor=upsample_factor)
    if version == "attn":
        return AttnFeatureHead(in_dim, hidden_dim, out_dim, num_heads, upsample_factor)
    raise ValueError(f"unknown adaptor MLP version {version!r} (expected v1, v2 or attn)")


def depth_to_space(tokens: torch.Tensor, grid: tuple[int, int], factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, h*w, u*u*C) with channels read as [u_row, u_col, C] -> (B, (h*u)*(w*u), C) raster tokens."""
    if factor == 1:
        return tokens, grid
    b, _, c = tokens.shape
    h, w = grid
    c //= factor * factor
    x = tokens.reshape(b, h, w, factor, factor, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * factor * w * factor, c), (h * factor, w * factor)


class Adaptor(nn.Module):
    """One teacher's heads: ``head_mlp`` (summary, on cls slot ``token_slot``) and ``feat_mlp`` (patch tokens)."""

    def __init__(self, cfg: AdaptorConfig, num_heads: int = 16):
        super().__init__()
        self.cfg = cfg
        self.head_mlp = build_mlp(cfg.summary_mlp) if cfg.summary_mlp else None
        self.feat_mlp = build_mlp(cfg.feature_mlp, cfg.upsample_factor, num_heads) if cfg.feature_mlp else None

    def forward(self, cls_tokens: torch.Tensor, features: torch.Tensor, grid: tuple[int, int]) -> AdaptorOutput:
        """cls_tokens (B, C, D) and features (B, h*w, D) -> float32 teacher-space outputs."""
        summary = cls_tokens[:, self.cfg.token_slot]
        summary = self.head_mlp(summary).float() if self.head_mlp is not None else summary.float()
        out_grid = grid
        if self.feat_mlp is not None:
            features, out_grid = depth_to_space(self.feat_mlp(features), grid, self.cfg.upsample_factor)
        return AdaptorOutput(summary=summary, features=features.float(), grid=out_grid)
