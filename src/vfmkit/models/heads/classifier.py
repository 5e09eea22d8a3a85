"""The classifier: a backbone and a linear head on its summary embedding."""

from __future__ import annotations

import torch
from torch import nn

from vfmkit.models.backbones.base import Backbone, BackboneOwner


class Classifier(BackboneOwner):
    """``images -> logits``: backbone summary -> [BatchNorm without affine] -> dropout -> Linear.

    The non-affine BatchNorm standardises the summary (RADIO's summaries are un-normalised and large), as in MAE's
    linear probe; in eval it is a fixed affine map, so the head stays linear.

    Args:
        backbone: any vfmkit backbone.
        num_classes: K.
        dropout: dropout before the linear layer.
    """

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        dim = backbone.summary_dim
        self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Dropout(dropout), nn.Linear(dim, num_classes))
        nn.init.trunc_normal_(self.head[2].weight, std=0.01)
        nn.init.zeros_(self.head[2].bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float RGB in [0, 1] -> (B, K) logits."""
        return self.head(self.backbone(images).summary)

    def classify_features(self, summary: torch.Tensor) -> torch.Tensor:
        """(B, C) precomputed summaries -> (B, K) logits (linear probe on cached features)."""
        return self.head(summary)
