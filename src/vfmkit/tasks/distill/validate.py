"""Validation of a distilled student: k-NN top-1 of its summary on labelled class folders (the domain's and a control
set's), and per-teacher fidelity (how close the heads' teacher-space outputs are to the teachers').

k-NN is the ``vfm knn`` protocol (:func:`vfmkit.features.knn.knn_evaluate`: L2-normalised summaries, k = 20
neighbours voting with ``exp(cos / T)``, T = 0.07), run on the student in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vfmkit.features.knn import KnnResult, knn_evaluate
from vfmkit.models.backbones.base import Backbone
from vfmkit.models.losses.distill import match_token_grids
from vfmkit.tasks.distill.model import DistillModel


def knn_top1(
    student: Backbone,
    root: str | Path,
    train_split: str = "train",
    val_split: str = "val",
    resolution: int | tuple[int, int] | None = None,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 64,
) -> KnnResult:
    """k-NN accuracy of ``student``'s summary: ``root/<val_split>/<class>/*`` queries against ``root/<train_split>``.

    The student is evaluated in eval mode and put back in the mode it was in.
    """
    was_training = student.training
    student.eval()
    try:
        return knn_evaluate(
            Path(root) / train_split,
            Path(root) / val_split,
            student,
            k=k,
            temperature=temperature,
            resolution=resolution,
            batch_size=batch_size,
            progress=False,
        )
    finally:
        student.train(was_training)


def head_fidelity(model: DistillModel, name: str, head, target) -> dict[str, torch.Tensor]:
    """Per image, the cosine similarity in teacher space of head ``name``'s outputs (standardisation inverse applied)
    to its teacher's ``target`` (:class:`~vfmkit.tasks.distill.teachers.TeacherTargets`): ``{"summary_cosine": (B,),
    "feature_cosine": (B,)}`` for the kinds the teacher produces (features: mean over tokens on the coarser grid)."""
    kinds, scores = model.standardizers[name], {}
    if target.summary is not None:
        scores["summary_cosine"] = F.cosine_similarity(kinds["summary"].inverse(head.summary), target.summary, dim=-1)
    if target.features is not None:
        student, teacher_tokens, _ = match_token_grids(
            kinds["features"].inverse(head.features), head.grid, target.features, target.grid
        )
        scores["feature_cosine"] = F.cosine_similarity(student, teacher_tokens, dim=-1).mean(dim=1)
    return scores
