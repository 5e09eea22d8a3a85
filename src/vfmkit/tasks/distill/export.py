"""Export of a distilled student: the adapted-backbone folder (what ``load_backbone`` / ``--model`` read) and ONNX.

Both are written from the student with its heads in the teacher's space (:func:`teacher_space_student`).

ONNX graph (:class:`ExportableStudent`): input ``image`` float32 (batch, 3, H, W) RGB in [0, 1] at a fixed H, W (the
model normalises inside); outputs ``summary`` (batch, C), ``features`` (batch, h*w, D) and, per head ``<name>``,
``<name>.summary`` (batch, C_t) and/or ``<name>.features`` (batch, h*w, C_t'), in the student's head order.
"""

from __future__ import annotations

import json
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


def export_student_onnx(
    student: Backbone,
    path: str | Path,
    resolution: tuple[int, int],
    opset: int = 17,
    teacher_info: dict[str, dict[str, Any]] | None = None,
    verify_images: torch.Tensor | None = None,
    tolerance: float = 1e-4,
) -> Path:
    """Export a student (heads already in teacher space) to ONNX and, given real images, verify it.

    Args:
        student: e.g. :func:`teacher_space_student` of the trained one, or ``load_backbone(folder, adaptors=[...])``.
        path: the ``.onnx`` file.
        resolution: (H, W) of the graph input.
        opset: ONNX operator set (>= 17).
        teacher_info: per head, metadata stored in the file.
        verify_images: float32 (B, 3, H, W) real preprocessed images to compare onnxruntime with PyTorch on.
        tolerance: largest max abs difference accepted by the verification.

    Raises:
        ExportError: export or verification failure.
    """
    from vfmkit.export.onnx import export_onnx
    from vfmkit.export.verify import verify_onnx

    module = ExportableStudent(student).eval()
    prep = student.preprocessing
    height, width = resolution
    metadata = {
        "task": "distill",
        "resolution": f"{height}x{width}",
        "input": f"image: float32 (batch, 3, {height}, {width}) RGB in [0, 1]; mean/std are applied inside the model",
        "outputs": json.dumps(module.output_names),
        "mean": json.dumps(list(prep.mean)),
        "std": json.dumps(list(prep.std)),
        "teachers": json.dumps(teacher_info or {}),
    }
    example = torch.rand(2, 3, height, width)
    export_onnx(module, (example,), path, ["image"], module.output_names, metadata, opset=opset)
    if verify_images is not None:
        verify_onnx(path, module, (verify_images,), tolerance=tolerance)
    return Path(path)
