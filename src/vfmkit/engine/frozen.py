"""The one frozen-backbone rule of every task's checkpoints.

A frozen backbone may be left out of a checkpoint only when its weights came from a named source (a registry id's
published weights, a hub id, a file; ``backbone.weights_source``). The checkpoint then records that source and a
fingerprint of the backbone's weights, and a reload that finds other weights at the source stops with an error
naming both. A randomly initialised backbone, or one that was trained (even partly), is always saved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from vfmkit.errors import WeightsError
from vfmkit.models.backbones.base import is_frozen
from vfmkit.weights.fingerprint import weights_fingerprint

CHECKPOINT_KEY = "frozen_backbone"
"""Top-level checkpoint key of the record (absent when the backbone is saved)."""


@dataclass(frozen=True)
class FrozenBackboneRecord:
    """A backbone left out of a checkpoint.

    Attributes:
        source: where its weights come from (``backbone.weights_source``).
        fingerprint: sha256 of its state dict when training started.
        model_path: its dotted attribute path inside the task model (e.g. ``backbone``, ``neck.backbone``).
    """

    source: str
    fingerprint: str
    model_path: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FrozenBackboneRecord:
        return cls(str(data["source"]), str(data["fingerprint"]), str(data["model_path"]))


def submodule(model: nn.Module, path: str) -> nn.Module:
    """``model.<path>`` for a dotted ``path``.

    Raises:
        AttributeError: no such attribute (a task definition bug, not a user error).
    """
    module = model
    for part in path.split("."):
        module = getattr(module, part)
    return module


def omitted_backbone(model: nn.Module, path: str) -> FrozenBackboneRecord | None:
    """The record of ``model.<path>`` when the rule lets checkpoints leave it out, else None."""
    backbone = submodule(model, path)
    source = getattr(backbone, "weights_source", None)
    if not source or not is_frozen(backbone):
        return None
    return FrozenBackboneRecord(source, weights_fingerprint(backbone), path)


def check_backbone_weights(model: nn.Module, record: FrozenBackboneRecord, checkpoint: Path | str) -> None:
    """Check that the backbone rebuilt from ``record.source`` has the weights the checkpoint was trained on.

    Raises:
        WeightsError: other weights (the file at the source was replaced, or the hub revision changed).
    """
    found = weights_fingerprint(submodule(model, record.model_path))
    if found != record.fingerprint:
        raise WeightsError(
            f"{checkpoint}: its frozen backbone was trained with the weights of {record.source} (sha256 "
            f"{record.fingerprint[:16]}...), but {record.source} now holds other weights (sha256 {found[:16]}...); "
            "restore the original weights or train again"
        )
