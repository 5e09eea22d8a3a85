"""Small pieces shared by the DETR encoders and decoder: MLP, inverse sigmoid, 2-D sine-cosine positions,
two-stage anchors and conv blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from vfmkit.models.necks.common import make_norm2d


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped to [0, 1] and both terms to >= ``eps`` (finite at 0 and 1)."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them: (..., in_dim) -> (..., out_dim)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, [*dims[1:], out_dim], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def sincos_position_2d(
    height: int,
    width: int,
    dim: int,
    temperature: float = 10000.0,
    normalize: bool = False,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding of an ``height`` x ``width`` grid, raster order.

    The channels are [sin(x), cos(x), sin(y), cos(y)] blocks of ``dim // 4`` frequencies each (RT-DETR's AIFI form).

    Args:
        height, width: grid size (Python ints).
        dim: channels, a multiple of 4.
        temperature: base of the frequency ladder.
        normalize: positions (i + 0.5) / size * 2 pi (Deformable-DETR / DINO) instead of integer indices (RT-DETR).
        device: where to build it.

    Returns:
        (1, height * width, dim) float32.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sine-cosine embedding needs a width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    if normalize:
        ys, xs = (ys + 0.5) / height * 2 * math.pi, (xs + 0.5) / width * 2 * math.pi
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    out_x = xs.flatten()[:, None] * omega[None]
    out_y = ys.flatten()[:, None] * omega[None]
    return torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)[None]


def level_anchors(
    spatial_shapes: Sequence[tuple[int, int]],
    grid_size: float = 0.05,
    eps: float = 0.01,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-stage proposals' anchors: one box per position of every level, in logit space.

    Centre = the cell centre, width = height = ``grid_size * 2**level`` (normalised to the image).

    Args:
        spatial_shapes: per level (H_l, W_l), finest first.
        grid_size: anchor side of level 0.
        eps: anchors with a coordinate outside (eps, 1 - eps) are invalid.
        device: where to build them.

    Returns:
        ``anchors`` (1, S, 4) float32 inverse-sigmoid cxcywh (invalid rows 0) and ``valid`` (1, S, 1) bool, where
        S = sum of H_l * W_l.
    """
    rows = []
    for level, (h, w) in enumerate(spatial_shapes):
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=device),
            torch.arange(w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        centres = torch.stack([(xs.flatten() + 0.5) / w, (ys.flatten() + 0.5) / h], dim=-1)
        sizes = torch.full_like(centres, grid_size * 2.0**level)
        rows.append(torch.cat([centres, sizes], dim=-1))
    anchors = torch.cat(rows)[None]
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    return torch.where(valid, inverse_sigmoid(anchors), torch.zeros_like(anchors)), valid


def make_norm(kind: str, channels: int) -> nn.Module:
    """``gn``: GroupNorm with gcd(32, C / 2) groups (DETR's 32 groups at C = 256; at least 2 channels per group, so
    a 1x1 map still normalises); otherwise :func:`~vfmkit.models.necks.common.make_norm2d` (``bn`` ...)."""
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, max(channels // 2, 1)), channels)
    return make_norm2d(kind, channels)


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> 2-D norm -> optional SiLU; ``padding`` keeps the size at stride 1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, norm: str = "gn", act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, bias=False),
            make_norm(norm, out_ch),
        ]
        if act:
            layers.append(nn.SiLU())
        super().__init__(*layers)


def prior_bias(prob: float = 0.01) -> float:
    """Classification bias that makes the initial sigmoid score ``prob`` (focal-loss initialisation)."""
    return -math.log((1 - prob) / prob)
