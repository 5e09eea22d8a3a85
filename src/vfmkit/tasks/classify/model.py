"""The classify task's model: the spec mapped onto :class:`~vfmkit.models.heads.classifier.Classifier`, what each
mode trains, and the exported graph."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from vfmkit.engine.optim import layer_id
from vfmkit.errors import ConfigurationError
from vfmkit.models.factory import load_backbone
from vfmkit.models.heads.classifier import Classifier
from vfmkit.tasks.classify.spec import ClassifySpec
from vfmkit.weights.rule import loader_arguments

Mode = Literal["linear_probe", "finetune", "partial"]


def build_classifier(spec: ClassifySpec, meta: dict[str, Any], pretrained: bool) -> Classifier:
    """Backbone + linear head over ``meta["classes"]``, frozen per mode. ``pretrained`` True loads the backbone's
    weights as the spec says (``model.pretrained``; a path loads its file), False loads none."""
    m = spec.model
    load_pretrained, _ = loader_arguments(m.backbone, m.pretrained, None, pretrained)
    backbone = load_backbone(m.backbone, pretrained=load_pretrained)
    classifier = Classifier(backbone, len(meta["classes"]), spec.model.head_dropout)
    set_trainable(classifier, spec.model.mode, spec.model.partial_blocks)
    return classifier


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
        raise ConfigurationError(
            f"model.mode 'partial' found no blocks to train in {type(backbone).__name__} with model.partial_blocks "
            f"{partial_blocks}; raise model.partial_blocks or use model.mode=finetune"
        )


class ExportableClassifier(nn.Module):
    """The exported graph: ``image`` (B, 3, H, W) float RGB in [0, 1] -> ``logits`` (B, K), ``probs`` (B, K)."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(image)
        return logits, logits.softmax(dim=-1)
