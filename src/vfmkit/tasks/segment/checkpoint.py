"""Rebuilding a trained segmenter from a ``vfm segment train`` checkpoint (loaded safely, weights_only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vfmkit.data.palette import Palette
from vfmkit.models.factory import load_backbone
from vfmkit.spec.segment import SegmentSpec
from vfmkit.tasks.checkpoints import load_task_weights, read_task_checkpoint
from vfmkit.tasks.segment.model import Segmenter


@dataclass
class TrainedSegmenter:
    """A segmenter with its training spec, class names and palette."""

    segmenter: Segmenter
    spec: SegmentSpec
    classes: list[str]
    palette: Palette
    checkpoint: Path


def build_segmenter(spec: SegmentSpec, num_classes: int, pretrained: bool | None = None) -> Segmenter:
    """Backbone (pretrained as the spec says unless overridden) + neck + head."""
    pretrained = spec.model.pretrained if pretrained is None else pretrained
    backbone = load_backbone(spec.model.backbone, pretrained=pretrained)
    if spec.train.activation_checkpointing and hasattr(backbone, "set_grad_checkpointing"):
        backbone.set_grad_checkpointing(True)
    return Segmenter(backbone, num_classes, spec.model)


def load_trained_segmenter(path: str | Path) -> TrainedSegmenter:
    """Rebuild the segmenter of a training checkpoint (a frozen backbone comes from its source).

    Raises:
        WeightsError: not a vfm segment checkpoint, or weights that do not fit.
    """
    path = Path(path)
    hparams, state = read_task_checkpoint(path, "segment")
    spec = SegmentSpec.model_validate(hparams["spec"])
    classes = list(hparams["classes"])
    frozen = spec.model.freeze_backbone
    segmenter = build_segmenter(spec, len(classes), pretrained=spec.model.pretrained if frozen else False)
    load_task_weights(segmenter, state, "segmenter.", path, "neck.backbone." if frozen else None)
    return TrainedSegmenter(segmenter.eval(), spec, classes, Palette.from_spec(spec.dataset), path)
