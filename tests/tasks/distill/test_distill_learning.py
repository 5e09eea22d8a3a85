"""Two teachers on scales 1e6 apart: with PHI-S the student learns both, with raw MSE the small one is lost (a plain
PyTorch loop over the real data, heads, standardisers and losses: the two runs it compares take half the time they
take through the engine; the one-teacher proof and everything the run folder offers go through the engine in
``test_distill_task.py``).
"""

from __future__ import annotations

import pytest
from tests.tasks.distill.distill_data import (
    PATTERNS,
    SIZE,
    ColourTeacher,
    PatternTeacher,
    distill_spec,
    make_pattern_dataset,
    train_plain,
)

from vfmkit.tasks.distill.model import build_distill_model
from vfmkit.tasks.distill.validate import knn_top1

CHANCE = 100.0 / len(PATTERNS)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pattern_dataset(tmp_path_factory.mktemp("patterns"))


def _knn(backbone, root) -> float:
    return knn_top1(backbone, root, resolution=SIZE).top1


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
