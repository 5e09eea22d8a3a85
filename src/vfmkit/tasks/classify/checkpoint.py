"""Rebuilding a trained classifier from a training checkpoint (loaded safely, weights_only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vfmkit.models.factory import load_backbone
from vfmkit.spec.classify import ClassifySpec
from vfmkit.tasks.checkpoints import load_task_weights, read_task_checkpoint
from vfmkit.tasks.classify.model import Classifier


@dataclass
class TrainedClassifier:
    """A classifier with the spec it was trained with and its class names (label order)."""

    classifier: Classifier
    spec: ClassifySpec
    classes: list[str]
    checkpoint: Path


def build_backbone(spec: ClassifySpec, pretrained: bool | None = None):
    """The spec's backbone (``pretrained`` defaults to the spec's setting)."""
    pretrained = spec.model.pretrained if pretrained is None else pretrained
    return load_backbone(spec.model.backbone, pretrained=pretrained)


def load_trained_classifier(path: str | Path) -> TrainedClassifier:
    """Rebuild the classifier of a ``vfm classify train`` checkpoint.

    Linear-probe checkpoints hold the head only: the frozen backbone is rebuilt from its source (as in training);
    fine-tuned checkpoints hold every weight, so the backbone is built without downloading anything.

    Raises:
        WeightsError: not a vfmkit classification checkpoint, or weights that do not fit.
    """
    path = Path(path)
    hparams, state = read_task_checkpoint(path, "classify")
    spec = ClassifySpec.model_validate(hparams["spec"])
    classes = list(hparams["classes"])
    frozen = spec.model.mode == "linear_probe"
    classifier = Classifier(build_backbone(spec, pretrained=spec.model.pretrained if frozen else False), len(classes))
    load_task_weights(classifier, state, "classifier.", path, "backbone." if frozen else None)
    return TrainedClassifier(classifier.eval(), spec, classes, path)
