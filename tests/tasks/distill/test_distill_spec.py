"""The distill spec: the example validates, TAO teacher keys, one or many teachers, head names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vfmkit.spec.base import Section
from vfmkit.tasks.distill.spec import DistillSpec, default_head_name


def _spec(**distill):
    return DistillSpec.model_validate(
        {
            "dataset": {"train_nolabel": {"folder_path": "unlabeled"}},
            "distill": {"teacher": [{"backbone": "c-radio-v3-h"}], **distill},
        }
    )


def test_example_validates_and_every_field_is_described():
    spec = DistillSpec.model_validate(DistillSpec.example)
    assert spec.task == "distill" and spec.distill.teacher[0].head_name == "siglip2-g"
    assert spec.distill.feature_normalization == "phi_s" and spec.distill.phi_s.freeze_after >= 1

    assert not list(_undocumented(DistillSpec)), list(_undocumented(DistillSpec))


def _sections(annotation) -> list[type]:
    """Section classes inside a field annotation (``X``, ``X | None``, ``list[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return [annotation]
    return [section for item in getattr(annotation, "__args__", ()) for section in _sections(item)]


def _undocumented(model: type, prefix: str = ""):
    """Dotted names of leaf fields without a description (sub-sections are walked instead)."""
    for name, field in model.model_fields.items():
        sections = _sections(field.annotation)
        if sections:
            for section in sections:
                yield from _undocumented(section, f"{prefix}{name}.")
        elif not field.description:
            yield prefix + name


def test_teacher_accepts_tao_keys_and_a_single_mapping():
    spec = _spec(
        teacher={
            "backbone": "c-radio-v3-h",
            "adaptor": "clip",
            "mode": "spatial",
            "loss_type": "balanced",
            "loss_lambda": 0.5,
            "summary_loss_type": "angle",
            "fd_loss_weight": 2.0,
            "summary_token_idx": 1,
            "spatial_mlp_version": "attn",
            "input_size": 432,
            "match_student_resolution": True,
        }
    )
    teacher = spec.distill.teacher[0]
    assert teacher.head_name == "clip" and teacher.spatial_mlp_version == "attn" and teacher.summary_token_idx == 1


def test_head_names_default_to_the_backbone_and_must_be_unique():
    assert default_head_name("radio-v2.5-b", None) == "radio-v2_5-b"
    assert default_head_name("runs/distill/exp/", None) == "exp"
    with pytest.raises(ValidationError, match="share the head name"):
        _spec(teacher=[{"backbone": "c-radio-v3-h"}, {"backbone": "c-radio-v3-h"}])
    spec = _spec(teacher=[{"backbone": "c-radio-v3-h"}, {"backbone": "c-radio-v3-h", "name": "second"}])
    assert [t.head_name for t in spec.distill.teacher] == ["c-radio-v3-h", "second"]
    with pytest.raises(ValidationError, match="letters, digits"):
        _spec(teacher=[{"backbone": "x", "name": "a.b"}])


def test_unknown_values_are_rejected():
    with pytest.raises(ValidationError):
        _spec(feature_normalization="zca")
    with pytest.raises(ValidationError):
        _spec(teacher=[{"backbone": "x", "mode": "logits"}])
    with pytest.raises(ValidationError):
        _spec(teacher=[])
