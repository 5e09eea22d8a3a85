"""Feature normalizers some RADIO checkpoints carry (PHI-S style whitening of the spatial features)."""

from __future__ import annotations

import torch
from torch import nn


class InputConditioner(nn.Module):
    """``(x - mean) / std`` on (B, 3, H, W) inputs in [0, 1]; buffers ``norm_mean``/``norm_std`` of shape (3, 1, 1)."""

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        self.register_buffer("norm_mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("norm_std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.norm_mean) / self.norm_std


class FeatureNormalizer(nn.Module):
    """Spatial whitening ``(x - mean) @ tx^T`` on (B, N, D) tokens; buffers ``mean`` (D) and ``tx`` (D, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("tx", torch.eye(dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean.to(features.dtype)) @ self.tx.to(features.dtype).T


class IntermediateFeatureNormalizer(nn.Module):
    """Per-layer ``alpha_i * ((x - means_i) @ R_i^T)`` for intermediate patch tokens.

    Buffers: ``means`` (L, D), ``rotation`` (D, D) or (L, D, D) when per layer, ``alphas`` (L).
    """

    def __init__(self, num_layers: int, dim: int, rotation_per_layer: bool = False):
        super().__init__()
        self.register_buffer("means", torch.zeros(num_layers, dim))
        rotation = torch.eye(dim).expand(num_layers, dim, dim).clone() if rotation_per_layer else torch.eye(dim)
        self.register_buffer("rotation", rotation)
        self.register_buffer("alphas", torch.ones(num_layers))

    def forward(self, features: torch.Tensor, layer: int) -> torch.Tensor:
        rotation = self.rotation[layer] if self.rotation.ndim == 3 else self.rotation
        out = (features - self.means[layer].to(features.dtype)) @ rotation.to(features.dtype).T
        return out * self.alphas[layer].to(features.dtype)
