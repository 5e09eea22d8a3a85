"""Distillation learns without labels (plain PyTorch loop over the real data, heads, standardisers and losses).

- one teacher: a random tiny RADIO student reaches the teacher's k-NN on classes a random network cannot see;
- two teachers on scales 1e6 apart: with PHI-S the student learns both, with raw MSE the small one is lost;
- the result is a backbone: the exported folder loads through ``load_backbone`` (and ``vfm embed``) with its heads,
  which speak the teacher's space.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tests.tasks.distill.distill_data import (
    PATTERNS,
    SIZE,
    ColourTeacher,
    PatternTeacher,
    distill_spec,
    load_images,
    make_pattern_dataset,
    train_plain,
)

from vfmkit import load_backbone
from vfmkit.export.runtime import OnnxModel
from vfmkit.features.embed import embed_source
from vfmkit.models.backbones.radio.model import RadioBackbone
from vfmkit.tasks.distill.export import export_adapted_student, export_student_onnx
from vfmkit.tasks.distill.model import build_distill_model, teacher_metadata
from vfmkit.tasks.distill.validate import knn_top1, teacher_fidelity

CHANCE = 100.0 / len(PATTERNS)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pattern_dataset(tmp_path_factory.mktemp("patterns"))


def _knn(backbone, root) -> float:
    return knn_top1(backbone, root, resolution=SIZE).top1


@pytest.fixture(scope="module")
def single(data):
    teacher = PatternTeacher()
    spec = distill_spec(
        data,
        [
            {
                "backbone": "pattern-oracle",
                "name": "pattern",
                "mode": "combo",
                "loss_type": "mse",
                "summary_loss_type": "mse",
            }
        ],
    )
    model = build_distill_model(spec, teacher_backbones={"pattern": teacher})
    untrained = _knn(model.student, data.by_pattern)
    history = train_plain(model, data.files["train"], epochs=16)
    return SimpleNamespace(spec=spec, model=model, teacher=teacher, untrained=untrained, history=history)


def test_one_teacher_student_learns_classes_without_labels(data, single):
    teacher_knn = _knn(single.teacher, data.by_pattern)
    student_knn = _knn(single.model.student, data.by_pattern)
    assert teacher_knn >= 95.0
    assert single.untrained <= CHANCE + 15.0, "the random student should not see the patterns"
    assert student_knn >= CHANCE + 40.0, (single.untrained, student_knn, single.history)
    assert student_knn >= 0.9 * teacher_knn, (teacher_knn, student_knn)
    assert single.history[-1] < 0.3 * single.history[0], single.history


def test_fidelity_is_measured_in_teacher_space(data, single):
    fidelity = teacher_fidelity(single.model, data.files["val"], (SIZE, SIZE))
    assert set(fidelity["pattern"]) == {"summary_cosine", "feature_cosine"}
    assert fidelity["pattern"]["summary_cosine"] > 0.9, fidelity


def test_exported_student_loads_as_a_backbone_with_teacher_space_heads(data, single, tmp_path):
    model = single.model.eval()
    folder = tmp_path / "adapted"
    export_adapted_student(folder, model.student, model.standardizers, teacher_metadata(single.spec, model))
    images = load_images(data.files["val"][:8])
    with torch.no_grad():
        expected = model.student(images)
        loaded = load_backbone(folder, adaptors=["pattern"])
        got = loaded(images)
    assert isinstance(loaded, RadioBackbone) and loaded.model_id == str(folder)
    torch.testing.assert_close(got.summary, expected.summary, rtol=0, atol=1e-5)
    kinds = model.standardizers["pattern"]
    for kind in ("summary", "features"):
        teacher_space = kinds[kind].inverse(getattr(expected.adaptors["pattern"], kind))
        torch.testing.assert_close(getattr(got.adaptors["pattern"], kind), teacher_space, rtol=1e-4, atol=1e-5)
    plain = load_backbone(str(folder))
    assert plain.adaptor_names == () and _knn(plain, data.by_pattern) == _knn(model.student, data.by_pattern)
    onnx = export_student_onnx(loaded, tmp_path / "student.onnx", (SIZE, SIZE), verify_images=images)
    assert OnnxModel(onnx).output_names == ["summary", "features", "pattern.summary", "pattern.features"]
    result = embed_source(
        data.unlabeled, str(folder), tmp_path / "emb.safetensors", adaptors=["pattern"], progress=False
    )
    assert set(result.embeddings.tensors) == {"summary", "adaptor.pattern.summary"}


def _two_teachers(data, normalization: str):
    teachers = [
        {"backbone": "colour-oracle", "name": "colour", "loss_type": "mse", "summary_loss_type": "mse"},
        {"backbone": "pattern-oracle", "name": "pattern", "loss_type": "mse", "summary_loss_type": "mse"},
    ]
    backbones = {"colour": ColourTeacher(scale=1e3), "pattern": PatternTeacher(scale=1e-3)}
    model = build_distill_model(distill_spec(data, teachers, normalization), teacher_backbones=backbones)
    train_plain(model, data.files["train"], epochs=16)
    return model, _knn(model.student, data.by_colour), _knn(model.student, data.by_pattern)


def test_two_teachers_on_scales_1e6_apart_need_phi_s(data):
    phi_s, colour, pattern = _two_teachers(data, "phi_s")
    heads = phi_s.student.adaptors
    assert (heads["colour"].cfg.token_slot, heads["pattern"].cfg.token_slot) == (0, 1)  # one cls slot each
    assert phi_s.student.backbone.cfg.summary_idxs == (0, 1)
    assert colour >= 90.0 and pattern >= 90.0, (colour, pattern)
    _, raw_colour, raw_pattern = _two_teachers(data, "none")
    assert raw_colour >= 90.0, raw_colour
    assert raw_pattern <= pattern - 20.0, (pattern, raw_pattern)
