"""The adapted-backbone folder: a student with teacher heads written once and loaded by ``load_backbone``."""

from __future__ import annotations

import json

import pytest
import torch

from vfmkit import load_backbone
from vfmkit.errors import VfmError, WeightsError
from vfmkit.models.backbones.adapted import (
    MANIFEST_NAME,
    AdaptedBackbone,
    attach_adaptors,
    save_adapted_backbone,
    set_summary_slots,
)
from vfmkit.models.backbones.radio.config import AdaptorConfig
from vfmkit.models.backbones.radio.model import RadioBackbone
from vfmkit.models.backbones.timm_family import TimmBackbone


def _heads(student, slot: int) -> list[AdaptorConfig]:
    width = student.embed_dim
    slot_width = width if isinstance(student, RadioBackbone) else student.summary_dim
    return [
        AdaptorConfig("teacher_a", slot, ("v2", slot_width, 16, 12, 1), ("attn", width, 16, 8, 0)),
        AdaptorConfig("teacher_b", 0, ("v2", slot_width, 8, 5, 0), None),
    ]


def _perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():  # trained-looking weights: not the seeded init the loader would rebuild anyway
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))


@pytest.mark.parametrize(("model_id", "slot"), [("test-radio-v2-tiny", 2), ("test-dinov2-tiny", 0)])
def test_student_with_heads_round_trips_through_load_backbone(tmp_path, model_id, slot):
    student = attach_adaptors(load_backbone(model_id), _heads(load_backbone(model_id), slot))
    _perturb(student)
    student.eval()
    save_adapted_backbone(tmp_path / "adapted", student)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = student(images)
        loaded = load_backbone(tmp_path / "adapted", adaptors=["teacher_a"])
        got = loaded(images)
    assert list(got.adaptors) == ["teacher_a"]
    torch.testing.assert_close(got.summary, expected.summary, rtol=0, atol=0)
    for kind in ("summary", "features"):
        torch.testing.assert_close(
            getattr(got.adaptors["teacher_a"], kind), getattr(expected.adaptors["teacher_a"], kind)
        )
    plain = load_backbone(tmp_path / "adapted")
    assert plain.adaptor_names == () and type(plain) is type(load_backbone(model_id))
    assert not loaded.load_report.missing and not loaded.load_report.unexpected


def test_radio_heads_read_their_own_cls_slot():
    student = load_backbone("test-radio-v2-tiny")
    configs = [AdaptorConfig(f"t{i}", i, ("v2", 64, 8, 4, 0), None) for i in range(2)]
    student = attach_adaptors(student, configs).eval()
    with torch.no_grad():
        student.adaptors["t1"].load_state_dict(student.adaptors["t0"].state_dict())  # same head, different slot
        out = student(torch.rand(1, 3, 64, 64))
    assert not torch.allclose(out.adaptors["t0"].summary, out.adaptors["t1"].summary)
    set_summary_slots(student, [1, 0])
    assert student.summary_dim == 128 and student(torch.rand(1, 3, 64, 64)).summary.shape == (1, 128)
    with pytest.raises(VfmError, match="not a cls slot"):
        attach_adaptors(student, [AdaptorConfig("t9", 9, ("v2", 64, 8, 4, 0), None)])
    with pytest.raises(VfmError, match="already has a head"):
        attach_adaptors(student, [AdaptorConfig("t0", 0, ("v2", 64, 8, 4, 0), None)])


def test_wrapped_student_keeps_the_backbone_surface():
    base = load_backbone("test-dinov2-tiny")
    wrapped = attach_adaptors(base, [AdaptorConfig("t", 0, ("v2", base.summary_dim, 8, 4, 0), None)])
    assert isinstance(wrapped, AdaptedBackbone) and isinstance(wrapped.backbone, TimmBackbone)
    assert wrapped.preprocessing == base.preprocessing and wrapped.num_blocks == base.num_blocks
    images = torch.rand(1, 3, 56, 56)
    tokens, grid = wrapped.embed_tokens(images)
    for block in wrapped.token_blocks():
        tokens = block(tokens)
    out = wrapped.finish_tokens(tokens, grid)
    assert "t" in out.adaptors and out.adaptors["t"].summary.shape == (1, 4)
    assert len(wrapped.forward_intermediates(images, 2)) == 2
    assert all(name.startswith("backbone.") for name in wrapped.no_weight_decay())
    with pytest.raises(VfmError, match="needs a RADIO student"):
        attach_adaptors(load_backbone("test-dinov2-tiny"), [AdaptorConfig("s", 1, ("v2", 32, 8, 4, 0), None)])


def test_a_manifest_elsewhere_can_point_at_the_weights(tmp_path):
    """What phase 2 does for run folders: ``runs/distill/exp/vfmkit_backbone.json`` -> ``export/...`` weights."""
    student = attach_adaptors(load_backbone("test-radio-v2-tiny"), _heads(load_backbone("test-radio-v2-tiny"), 0))
    save_adapted_backbone(tmp_path / "run" / "export", student)
    manifest = json.loads((tmp_path / "run" / "export" / MANIFEST_NAME).read_text())
    manifest["weights"] = "export/model.safetensors"
    (tmp_path / "run" / MANIFEST_NAME).write_text(json.dumps(manifest))
    loaded = load_backbone(tmp_path / "run", adaptors=["teacher_b"])
    assert loaded.adaptor_names == ("teacher_b",)


def test_bad_folders_fail_with_one_line_naming_the_problem(tmp_path):
    student = attach_adaptors(load_backbone("test-radio-v2-tiny"), _heads(load_backbone("test-radio-v2-tiny"), 0))
    folder = tmp_path / "adapted"
    save_adapted_backbone(folder, student)
    with pytest.raises(WeightsError, match=r"adaptor\(s\) \['nope'\] are not in this adapted backbone"):
        load_backbone(folder, adaptors=["nope"])
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(WeightsError, match="'version'"):
        load_backbone(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps({**manifest, "student": {"family": "timm"}}))
    with pytest.raises(WeightsError, match="student.registry_id"):
        load_backbone(folder)
    (folder / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(WeightsError, match="not a readable JSON manifest"):
        load_backbone(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_backbone(folder)
    other = attach_adaptors(load_backbone("test-radio-v3-tiny"), [])
    save_adapted_backbone(folder, other)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["student"]["config"]["depth"] = 3
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="missing"):
        load_backbone(folder)
