"""Building the distillation objective from a spec: heads per student kind, trainable blocks, resolutions, errors."""

from __future__ import annotations

import pytest
import torch
from tests.tasks.distill.distill_data import (
    SIZE,
    ColourTeacher,
    PatternTeacher,
    distill_spec,
    load_images,
    make_pattern_dataset,
)

from vfmkit import load_backbone
from vfmkit.errors import VfmError, WeightsError
from vfmkit.models.backbones.adapted import AdaptedBackbone
from vfmkit.models.backbones.base import is_frozen
from vfmkit.models.backbones.radio.adaptors import AttnFeatureHead
from vfmkit.tasks.distill.data import DistillImages, collate_distill
from vfmkit.tasks.distill.export import export_adapted_student
from vfmkit.tasks.distill.heads import backbone_parameters, head_parameters
from vfmkit.tasks.distill.model import build_distill_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pattern_dataset(tmp_path_factory.mktemp("tiny"), {"train": 1, "val": 1})


def _batch(model, data, count: int = 4, size: int = SIZE):
    dataset = DistillImages(data.files["train"][:count], (size, size), model.teacher_sizes())
    return collate_distill([dataset[i] for i in range(count)])


def test_timm_student_gets_wrapped_heads_and_trains_through_both(data):
    spec = distill_spec(
        data,
        [
            {"backbone": "pattern-oracle", "name": "pattern", "mode": "combo", "spatial_mlp_version": "attn"},
            {"backbone": "colour-oracle", "name": "colour", "mode": "summary", "summary_loss_type": "angle"},
        ],
    )
    student = load_backbone("test-dinov2-tiny", pretrained=False)
    model = build_distill_model(
        spec, student=student, teacher_backbones={"pattern": PatternTeacher(), "colour": ColourTeacher()}
    )
    assert isinstance(model.student, AdaptedBackbone)
    assert isinstance(model.student.adaptors["pattern"].feat_mlp, AttnFeatureHead)
    size = 56  # the student's own step (patch 14 is not a divisor of 32)
    losses = model.train()(_batch(model, data, size=size))
    assert set(losses) == {"loss", "pattern/summary", "pattern/features", "colour/summary"}
    losses["loss"].backward()
    assert all(p.grad is not None for _, p in head_parameters(model.student))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in backbone_parameters(model.student))
    assert not any(p.requires_grad for p in model.teachers.parameters())
    assert all(not t.backbone.training for t in model.teachers.values())  # teachers stay in eval mode


def test_trainable_blocks_freeze_the_rest_of_the_student(data):
    spec = distill_spec(data, [{"backbone": "pattern-oracle", "name": "pattern"}])
    spec.model.trainable_blocks = 1
    model = build_distill_model(spec, teacher_backbones={"pattern": PatternTeacher()})
    trainable = {n for n, p in backbone_parameters(model.student) if p.requires_grad}
    assert trainable and all(n.startswith(("backbone.model.blocks.1.", "backbone.model.norm")) for n in trainable)
    assert all(p.requires_grad for _, p in head_parameters(model.student))
    spec.model.trainable_blocks = 0  # the student stays frozen: only the heads train
    model = build_distill_model(spec, teacher_backbones={"pattern": PatternTeacher()})
    assert is_frozen(model.student.backbone) and all(p.requires_grad for _, p in head_parameters(model.student))


def test_teachers_run_at_their_own_resolution_unless_matched(data):
    teachers = [
        {"backbone": "pattern-oracle", "name": "pattern", "input_size": 64},
        {"backbone": "colour-oracle", "name": "colour", "input_size": 64, "match_student_resolution": True},
    ]
    model = build_distill_model(
        distill_spec(data, teachers), teacher_backbones={"pattern": PatternTeacher(), "colour": ColourTeacher()}
    )
    assert model.teacher_sizes() == {"pattern": (64, 64), "colour": (SIZE, SIZE)}
    batch = _batch(model, data)
    assert batch["teachers"]["pattern"]["images"].shape[-2:] == (64, 64)
    losses = model.train()(batch)  # pattern features on an 8x8 grid meet the student's 2x2 grid
    assert torch.isfinite(losses["loss"])


def test_standardisers_learn_only_in_training_and_freeze(data):
    model = build_distill_model(
        distill_spec(data, [{"backbone": "pattern-oracle", "name": "pattern"}]),
        teacher_backbones={"pattern": PatternTeacher()},
    )
    batch = _batch(model, data)
    summary = model.standardizers["pattern"]["summary"]
    model.eval()(batch)
    assert int(summary.updates) == 0
    model.train()
    for _ in range(5):
        model(batch)
    assert int(summary.updates) == 5 and model.frozen_standardizers()
    model(batch)
    assert int(summary.updates) == 5


def test_spec_errors_are_one_line_vfm_errors(data):
    with pytest.raises(VfmError, match="not a cls slot"):
        build_distill_model(
            distill_spec(data, [{"backbone": "p", "name": "pattern", "summary_token_idx": 7}]),
            teacher_backbones={"pattern": PatternTeacher()},
        )
    with pytest.raises(VfmError, match="no cache folder"):
        build_distill_model(
            distill_spec(data, [{"backbone": "p", "name": "pattern"}], cache_teacher_outputs=True),
            teacher_backbones={"pattern": PatternTeacher()},
        )
    with pytest.raises(VfmError, match="has no adaptor 'clip'"):
        build_distill_model(
            distill_spec(data, [{"backbone": "p", "name": "pattern", "adaptor": "clip"}]),
            teacher_backbones={"pattern": PatternTeacher()},
        )


def test_registry_teacher_with_its_adaptor_is_loaded_from_the_spec(data):
    spec = distill_spec(data, [{"backbone": "test-radio-v2-tiny", "adaptor": "siglip", "pretrained": False}])
    model = build_distill_model(spec)
    teacher = model.teachers["siglip"]
    assert (teacher.summary_dim, teacher.feature_dim) == (40, 24) and teacher.resolution == (64, 64)
    losses = model.train()(_batch(model, data))
    assert torch.isfinite(losses["loss"])


def test_state_leaves_the_teachers_out_and_reloads_strictly(data):
    def build():
        return build_distill_model(
            distill_spec(data, [{"backbone": "pattern-oracle", "name": "pattern"}]),
            teacher_backbones={"pattern": PatternTeacher()},
        )

    model = build()
    batch = _batch(model, data)
    model.train()(batch)  # the standardisers learn something
    state = model.state_dict()
    assert not any(k.startswith("teachers.") for k in state)
    assert any(k.startswith("standardizers.pattern.summary.") for k in state)
    fresh = build()
    fresh.load_state_dict(state, strict=True)
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(batch)["loss"], model(batch)["loss"])
    wrapped = torch.nn.ModuleDict({"model": model})  # nested, as inside a LightningModule
    assert not any(".teachers." in k for k in wrapped.state_dict())
    torch.nn.ModuleDict({"model": build()}).load_state_dict(wrapped.state_dict(), strict=True)


def test_checkpoints_keep_teacher_fingerprints_and_refuse_other_teacher_weights(data):
    spec = distill_spec(data, [{"backbone": "pattern-oracle", "name": "pattern"}])
    model = build_distill_model(spec, teacher_backbones={"pattern": PatternTeacher()})
    state = model.state_dict()
    assert not any(key.startswith("teachers.") for key in state)  # teachers are rebuilt from the spec, not saved
    same = build_distill_model(spec, teacher_backbones={"pattern": PatternTeacher()})
    same.load_state_dict(state)
    same.check_teachers()
    other = build_distill_model(spec, teacher_backbones={"pattern": ColourTeacher()})  # same widths, other weights
    other.load_state_dict(state)  # loading is allowed (train.init_from may change teachers) ...
    with pytest.raises(WeightsError, match=r"teacher 'pattern'.*other teacher weights"):
        other.check_teachers()  # ... evaluate, predict, export and resume check


def test_wrapped_radio_heads_equal_the_native_heads_of_the_saved_folder(data, tmp_path):
    """While training, a RADIO student's heads sit outside it (each reads its cls slot from ``out.cls_tokens``);
    saved and loaded, they are native RADIO adaptors: same outputs, for every slot."""
    teachers = [{"backbone": "colour-oracle", "name": "colour"}, {"backbone": "pattern-oracle", "name": "pattern"}]
    model = build_distill_model(
        distill_spec(data, teachers), teacher_backbones={"colour": ColourTeacher(), "pattern": PatternTeacher()}
    ).eval()
    for _ in range(3):  # statistics, so the folded inverse is not the identity
        model.train()(_batch(model, data, count=8))
    model.eval()
    export_adapted_student(tmp_path / "adapted", model.student, model.standardizers)
    loaded = load_backbone(tmp_path / "adapted", adaptors=["colour", "pattern"])
    images = load_images(data.files["val"][:4])
    with torch.no_grad():
        wrapped, native = model.student(images), loaded(images)
    assert isinstance(model.student, AdaptedBackbone) and "colour" in loaded.adaptors  # native RADIO heads
    torch.testing.assert_close(native.summary, wrapped.summary, rtol=0, atol=1e-5)
    for name in ("colour", "pattern"):
        kinds = model.standardizers[name]
        for kind in ("summary", "features"):
            expected = kinds[kind].inverse(getattr(wrapped.adaptors[name], kind))
            torch.testing.assert_close(getattr(native.adaptors[name], kind), expected, rtol=1e-4, atol=1e-4)
