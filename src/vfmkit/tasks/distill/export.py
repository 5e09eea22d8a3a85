"""Export of a distilled student: the adapted-backbone folder (what ``load_backbone`` / ``--model`` read) and the
module the engine exports to ONNX (``vfm distill export``; :meth:`~vfmkit.tasks.distill.hooks.DistillTask.export_plan`).

Both are made from the student with its heads in the teacher's space (:func:`teacher_space_student`).

ONNX graph (:class:`ExportableStudent`): input ``image`` float32 (batch, 3, H, W) RGB in [0, 1] at a fixed H, W (the
model normalises inside); outputs ``summary`` (batch, C), ``features`` (batch, h*w, D) and, per head ``<name>``,
``<name>.summary`` (batch, C_t) and/or ``<name>.features`` (batch, h*w, C_t'), in the student's head order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vfmkit.models.backbones.adapted import save_adapted_backbone
from vfmkit.models.backbones.base import Backbone
from vfmkit.models.losses.phi_s import FeatureStandardizer
from vfmkit.tasks.distill.heads import teacher_space_student


def export_adapted_student(
    folder: str | Path,
    student: Backbone,
    standardizers: dict[str, dict[str, FeatureStandardizer]],
    teacher_info: dict[str, dict[str, Any]] | None = None,
    registry_id: str | None = None,
) -> Path:
    """Write the adapted student (heads in teacher space) as a folder ``vfmkit.load_backbone`` reads.

    Args:
        folder: output folder.
        student: the trained student with heads (standardised space).
        standardizers: head name -> ``{"summary": ..., "features": ...}`` (the kinds its heads use).
        teacher_info: head name -> metadata stored in the manifest (teacher id, adaptor, input size, mode...).
        registry_id: the student's registry id when the model does not carry it.

    Returns:
        The manifest path.
    """
    folded = teacher_space_student(student, standardizers)
    info = {name: {"space": "teacher", "teacher": (teacher_info or {}).get(name, {})} for name in folded.adaptors}
    return save_adapted_backbone(folder, folded, info, registry_id=registry_id)


class ExportableStudent(nn.Module):
    """``image -> (summary, features, <head>.summary, <head>.features, ...)`` as plain tensors (see the module doc)."""

    def __init__(self, student: Backbone):
        super().__init__()
        self.student = student
        self.heads = []
        for name, adaptor in student.adaptors.items():
            kinds = (["summary"] if adaptor.head_mlp is not None else []) + (
                ["features"] if adaptor.feat_mlp is not None else []
            )
            self.heads.extend((name, kind) for kind in kinds)

    @property
    def output_names(self) -> list[str]:
        return ["summary", "features", *(f"{name}.{kind}" for name, kind in self.heads)]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.student(image)
        return (out.summary, out.features, *(getattr(out.adaptors[name], kind) for name, kind in self.heads))
