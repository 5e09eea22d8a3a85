"""Rebuilding a trained change model from a training checkpoint (loaded safely, weights_only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vfmkit.errors import WeightsError
from vfmkit.spec.change import ChangeSpec
from vfmkit.tasks.change.model import ChangeModel, backbone_in_checkpoint, build_change_model
from vfmkit.tasks.checkpoints import load_task_weights, read_task_checkpoint


@dataclass
class TrainedChange:
    """A change model (eval mode) with the spec it was trained with.

    Attributes:
        model: the segmenter or classifier.
        spec: the training spec (``task_type``, resolution, threshold ...).
        checkpoint: the file it came from.
    """

    model: ChangeModel
    spec: ChangeSpec
    checkpoint: Path

    @property
    def threshold(self) -> float:
        """Decision threshold of the classify variant (FAIL when score > threshold)."""
        return self.spec.threshold


def load_trained_change(path: str | Path) -> TrainedChange:
    """Rebuild the model of a ``vfm change train`` checkpoint.

    Checkpoints of a frozen published backbone hold everything but the backbone, which is rebuilt from its source
    (as in training); the others hold every weight, so the backbone is built without downloading anything.

    Raises:
        WeightsError: not a vfmkit change checkpoint, or weights that do not fit.
    """
    path = Path(path)
    hparams, state = read_task_checkpoint(path, "change")
    if not isinstance(hparams["spec"], dict) or "task_type" not in hparams["spec"]:
        raise WeightsError(f"{path}: not a vfm change checkpoint (no task_type in its spec)")
    spec = ChangeSpec.model_validate(hparams["spec"])
    keep = backbone_in_checkpoint(spec)
    model = build_change_model(spec, pretrained=False if keep else spec.model.pretrained)
    load_task_weights(model, state, "model.", path, None if keep else "neck.backbone.")
    return TrainedChange(model.eval(), spec, path)
