"""Per-teacher projection heads on the student (the RADIO adaptor MLPs), trainable-block selection, and the export
of the adapted student with the standardisation inverses folded into the heads.

A head pair per teacher, built from :mod:`vfmkit.models.backbones.radio.adaptors`:

- summary head: MLP v2 ``(slot width -> hidden -> teacher summary width)`` on cls slot ``summary_token_idx`` of a
  RADIO student (each teacher its own slot, as in RADIO) or on the summary of any other student;
- feature head: MLP v2 or the ``attn`` head (2 ViT blocks + MLP, C-RADIOv4 style) from the student's patch tokens to
  the teacher's feature width.

They are attached with :func:`vfmkit.models.backbones.adapted.attach_adaptors`, so the trained student is a
backbone whose ``out.adaptors[teacher]`` are the head outputs: in the standardised teacher space during training, in
the teacher's own space after :func:`teacher_space_student` (``W' = A^-1 W``, ``b' = A^-1 b + mu`` folded into each
head's last Linear), which is what :mod:`vfmkit.tasks.distill.export` writes.
"""

from __future__ import annotations

import copy

from torch import nn

from vfmkit.engine.optim import layer_id
from vfmkit.models.backbones.adapted import ADAPTOR_PREFIX, AdaptedBackbone, plain_backbone
from vfmkit.models.backbones.base import Backbone
from vfmkit.models.backbones.radio.adaptors import MLP1, MLP2, AttnFeatureHead
from vfmkit.models.backbones.radio.config import AdaptorConfig
from vfmkit.models.backbones.radio.model import RadioBackbone
from vfmkit.models.losses.phi_s import FeatureStandardizer


def summary_slot_width(student: Backbone) -> int:
    """Width of what a summary head reads: one cls token (RADIO) or the summary (others)."""
    plain = plain_backbone(student)
    return plain.embed_dim if isinstance(plain, RadioBackbone) else plain.summary_dim


def resolve_token_slot(student: Backbone, requested: int | None, teacher_index: int) -> int:
    """The cls slot of a teacher: ``requested``, else slot ``teacher_index`` on a RADIO student that has it, else 0."""
    if requested is not None:
        return requested
    plain = plain_backbone(student)
    if isinstance(plain, RadioBackbone) and teacher_index < plain.cfg.num_cls_tokens:
        return teacher_index
    return 0


def head_config(
    name: str,
    student: Backbone,
    mode: str,
    summary_dim: int,
    feature_dim: int,
    token_slot: int = 0,
    spatial_mlp_version: str = "v2",
    hidden_dim: int | None = None,
    num_inner: int = 1,
) -> AdaptorConfig:
    """The head pair of one teacher (only the heads its ``mode`` uses).

    Args:
        name: teacher head name.
        student: the student backbone.
        mode: ``summary``, ``spatial`` or ``combo``.
        summary_dim, feature_dim: teacher output widths.
        token_slot: cls slot of the summary head.
        spatial_mlp_version: ``v2`` or ``attn``.
        hidden_dim: hidden width (None: the student's width).
        num_inner: residual blocks of the v2 MLPs.
    """
    width = plain_backbone(student).embed_dim
    hidden = hidden_dim or width
    summary = ("v2", summary_slot_width(student), hidden, summary_dim, num_inner) if mode != "spatial" else None
    inner = num_inner if spatial_mlp_version == "v2" else 0
    feature = (spatial_mlp_version, width, hidden, feature_dim, inner) if mode != "summary" else None
    return AdaptorConfig(name=name, token_slot=token_slot, summary_mlp=summary, feature_mlp=feature)


def set_trainable_blocks(student: Backbone, trainable_blocks: int | None) -> None:
    """Heads always train; the student trains whole (None), not at all (0) or only its last ``trainable_blocks``
    blocks and what follows them (final norm). Layers are told apart by :func:`vfmkit.engine.optim.layer_id`."""
    depth = plain_backbone(student).num_blocks
    wrapped = isinstance(student, AdaptedBackbone)
    for name, param in student.named_parameters():
        if name.startswith(ADAPTOR_PREFIX):
            param.requires_grad_(True)
            continue
        inner = name.removeprefix("backbone.") if wrapped else name
        trains = trainable_blocks is None or (
            trainable_blocks > 0 and layer_id(inner, depth) > depth - trainable_blocks
        )
        param.requires_grad_(trains)


def head_parameters(student: Backbone) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the heads."""
    return [(n, p) for n, p in student.named_parameters() if n.startswith(ADAPTOR_PREFIX)]


def backbone_parameters(student: Backbone) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the student without its heads (names as in ``student.named_parameters()``)."""
    return [(n, p) for n, p in student.named_parameters() if not n.startswith(ADAPTOR_PREFIX)]


def _last_linear(mlp: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute) of an adaptor MLP's output Linear."""
    if isinstance(mlp, MLP2):
        return mlp.final, "2"
    if isinstance(mlp, MLP1):
        return mlp, "fc2"
    if isinstance(mlp, AttnFeatureHead):
        return mlp.mlp.final, "2"
    raise TypeError(f"unknown head type {type(mlp).__name__}")


def fold_into_head(mlp: nn.Module, standardizer: FeatureStandardizer) -> None:
    """Replace the head's output Linear with one that emits teacher-space features (in place).

    Raises:
        ValueError: an upsampling head (its Linear emits u^2 * C channels).
    """
    if getattr(mlp, "upsample_factor", 1) != 1:
        raise ValueError("folding the standardisation into an upsampling head is not supported")
    parent, attr = _last_linear(mlp)
    setattr(parent, attr, standardizer.fold_inverse_into_linear(getattr(parent, attr)))


def teacher_space_student(student: Backbone, standardizers: dict[str, dict[str, FeatureStandardizer]]) -> Backbone:
    """A copy of the student whose heads emit teacher-space outputs.

    Args:
        student: the trained student with heads (standardised space).
        standardizers: head name -> ``{"summary": ..., "features": ...}`` (the kinds its heads use).
    """
    folded = copy.deepcopy(student).eval()
    tables = {name: dict(kinds.items()) for name, kinds in standardizers.items()}  # plain dicts (ModuleDicts too)
    for name, adaptor in folded.adaptors.items():
        kinds = tables.get(name, {})
        if adaptor.head_mlp is not None and "summary" in kinds:
            fold_into_head(adaptor.head_mlp, kinds["summary"])
        if adaptor.feat_mlp is not None and "features" in kinds:
            fold_into_head(adaptor.feat_mlp, kinds["features"])
    return folded
