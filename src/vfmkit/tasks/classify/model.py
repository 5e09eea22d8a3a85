"""The classifier: a backbone and a linear head on its summary embedding."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vfmkit.models.backbones.base import Backbone
from vfmkit.tasks.optim import layer_id

Mode = Literal["linear_probe", "finetune", "partial"]


class Classifier(nn.Module):
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


def set_trainable(classifier: Classifier, mode: Mode, partial_blocks: int = 2) -> None:
    """Freeze according to ``mode``: linear_probe trains the head only (backbone in eval mode for good), partial
    trains the last ``partial_blocks`` blocks and everything after them, finetune trains everything."""
    backbone = classifier.backbone
    depth = backbone.num_blocks
    for name, param in backbone.named_parameters():
        if mode == "finetune":
            param.requires_grad_(True)
        elif mode == "partial":
            param.requires_grad_(layer_id(name, depth) > depth - partial_blocks)
        else:
            param.requires_grad_(False)
    if mode == "partial" and not any(p.requires_grad for p in backbone.parameters()):
        raise ValueError(f"partial mode found no trainable blocks in {type(backbone).__name__}")


class ExportableClassifier(nn.Module):
    """The exported graph: ``image`` (B, 3, H, W) float RGB in [0, 1] -> ``logits`` (B, K), ``probs`` (B, K)."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(image)
        return logits, logits.softmax(dim=-1)
