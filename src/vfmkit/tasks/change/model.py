"""Building the change model of a spec, the loss of each variant, and the graphs that are exported to ONNX."""

from __future__ import annotations

import torch
from torch import nn

from vfmkit.models.factory import load_backbone
from vfmkit.models.heads.changenet import (
    ChangeSegmenter,
    EuclideanChangeClassifier,
    LearnableChangeClassifier,
)
from vfmkit.models.necks import build_neck
from vfmkit.tasks.change.spec import ChangeSpec
from vfmkit.weights.rule import loader_arguments

ChangeModel = ChangeSegmenter | LearnableChangeClassifier | EuclideanChangeClassifier


def build_change_model(spec: ChangeSpec, pretrained: bool | None = None) -> ChangeModel:
    """The spec's backbone, neck and change head. ``pretrained`` None or True loads the backbone's weights as the
    spec says (``model.pretrained``; a path loads its file), False loads none.

    Raises:
        VfmError: an unknown or unloadable backbone (from :func:`~vfmkit.models.factory.load_backbone`), or a neck
            that does not support the backbone (ConfigurationError naming ``model.neck``).
    """
    m = spec.model
    load_pretrained, _ = loader_arguments(m.backbone, m.pretrained, None, pretrained is not False)
    backbone = load_backbone(m.backbone, pretrained=load_pretrained)
    options = {
        "out_channels": m.neck_channels,
        "summary_fusion": m.summary_fusion,
        "freeze_backbone": m.freeze_backbone,
    }
    if m.neck == "simple_pyramid":
        options["norm"] = "bn"
    neck = build_neck(m.neck, backbone, **options)
    if spec.task_type == "segment":
        return ChangeSegmenter(neck, m.decoder_channels)
    lights = len(spec.dataset.light_conditions)
    if m.difference == "euclidean":
        return EuclideanChangeClassifier(neck, lights, m.embedding_dim)
    return LearnableChangeClassifier(
        neck, m.decoder_channels, lights, m.learnable_levels, m.classifier_hidden, m.golden_reduce
    )


def class_names(spec: ChangeSpec) -> tuple[str, str]:
    """Names of class 0 and 1: ``unchanged, changed`` (segment) or ``PASS, FAIL`` (classify)."""
    return ("unchanged", "changed") if spec.task_type == "segment" else ("PASS", "FAIL")


class ExportableChangeSegmenter(nn.Module):
    """The exported segment graph: ``image_a``, ``image_b`` float32 (B, 3, R, R) RGB in [0, 1] ->
    ``change_logits`` float32 (B, 2, R, R) at the input resolution (index 1 = changed)."""

    def __init__(self, model: ChangeSegmenter):
        super().__init__()
        self.model = model

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
        return self.model(image_a, image_b)


class ExportableChangeClassifier(nn.Module):
    """The exported classify graph: ``image`` (B, 3L, R, R) and ``golden`` (B, 3L, R, R) (or (B, N, 3L, R, R) for
    multi-golden) float32 RGB in [0, 1] -> ``score`` float32 (B,): FAIL probability (learnable) or embedding
    distance (euclidean); FAIL when score > the ``threshold`` stored in the metadata."""

    def __init__(self, model: LearnableChangeClassifier | EuclideanChangeClassifier):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        return self.model.score(image, golden)
