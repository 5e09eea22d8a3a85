"""The teacher-output cache: hits from the second epoch, invalidation by teacher weights, corrupt entries rebuilt,
and the same targets whether a teacher runs or its outputs come from disk."""

from __future__ import annotations

import pytest
import torch
from tests.tasks.distill.distill_data import (
    SIZE,
    ColourTeacher,
    PatternTeacher,
    distill_spec,
    make_pattern_dataset,
    train_plain,
)
from torch.utils.data import DataLoader

from vfmkit.tasks.distill.data import DistillImages, collate_distill
from vfmkit.tasks.distill.model import build_distill_model
from vfmkit.tasks.distill.teachers import FrozenTeacher, TeacherCache, file_key

TEACHERS = [
    {"backbone": "pattern-oracle", "name": "pattern", "mode": "combo"},
    {"backbone": "colour-oracle", "name": "colour", "mode": "summary"},
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pattern_dataset(tmp_path_factory.mktemp("small"), {"train": 1, "val": 1})


def _model(data, cache_dir, pattern=None):
    spec = distill_spec(data, TEACHERS, cache_teacher_outputs=True, cache_dir=str(cache_dir), cache_dtype="float32")
    backbones = {"pattern": pattern or PatternTeacher(), "colour": ColourTeacher()}
    return build_distill_model(spec, teacher_backbones=backbones)


def _epoch(model, data) -> tuple[int, int]:
    hits, misses = model.cache_hits, model.cache_misses
    train_plain(model, data.files["train"], epochs=1, batch_size=8)
    return model.cache_hits - hits, model.cache_misses - misses


def test_second_epoch_hits_and_a_second_student_reuses_the_cache(data, tmp_path):
    model = _model(data, tmp_path)
    images = len(data.files["train"])
    assert _epoch(model, data) == (0, 2 * images)  # two teachers, every image computed once
    assert _epoch(model, data) == (2 * images, 0)
    another_student = _model(data, tmp_path)
    assert _epoch(another_student, data) == (2 * images, 0)


def test_changed_teacher_weights_invalidate_only_that_teacher(data, tmp_path):
    model = _model(data, tmp_path)
    _epoch(model, data)
    changed = PatternTeacher()
    changed.code.mul_(2.0)  # different weights, same architecture
    retrained = _model(data, tmp_path, pattern=changed)
    images = len(data.files["train"])
    assert _epoch(retrained, data) == (images, images)  # colour still cached, pattern recomputed


def test_corrupt_entry_is_recomputed_and_rewritten(data, tmp_path):
    model = _model(data, tmp_path)
    _epoch(model, data)
    key = file_key(data.files["train"][3])
    entry = model.cache.entry_path("pattern", key)
    entry.write_bytes(b"not a safetensors file")
    damaged_before = model.cache_stats.damaged
    assert _epoch(model, data) == (2 * len(data.files["train"]) - 1, 1)
    assert model.cache_stats.damaged == damaged_before + 1
    assert entry.name in model.cache_stats.example and "unreadable" in model.cache_stats.example
    assert model.cache.load("pattern", key) is not None


def test_cached_targets_equal_the_teachers_and_jitter_touches_only_the_student_view(data, tmp_path):
    teacher = FrozenTeacher(PatternTeacher(), "pattern", "combo")
    cache = TeacherCache.for_teachers(tmp_path, [teacher], "float32")
    clean = DistillImages(data.files["train"][:4], (SIZE, SIZE), {"pattern": teacher.resolution})
    batch = collate_distill([clean[i] for i in range(4)])
    expected = teacher(batch["teachers"]["pattern"]["images"])
    for row in range(4):
        cache.save(
            "pattern",
            file_key(data.files["train"][row]),
            expected.summary[row],
            expected.features[row],
            expected.grid,
        )
    jittered = DistillImages(
        data.files["train"][:4], (SIZE, SIZE), {"pattern": teacher.resolution}, cache=cache, color_jitter=0.5
    )
    loader = DataLoader(jittered, batch_size=4, collate_fn=collate_distill)
    cached = next(iter(loader))
    part = cached["teachers"]["pattern"]
    assert part["images"] is None and part["cached_rows"].tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(part["cached"]["summary"], expected.summary)
    torch.testing.assert_close(part["cached"]["features"], expected.features)
    assert part["grid"] == expected.grid
    assert not torch.allclose(cached["student"], batch["student"])  # the student saw a jittered view
    assert torch.equal(jittered[1]["student"], jittered[1]["student"])  # seeded by (seed, epoch, index)
