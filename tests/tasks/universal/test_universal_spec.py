"""The universal spec: TAO field names and defaults, validation with clear messages, loading, the model it builds."""

from __future__ import annotations

import pytest
import torch
import yaml
from pydantic import ValidationError

from vfmkit.spec.loader import SpecError, load_spec
from vfmkit.spec.render import render_spec_template
from vfmkit.tasks.universal.model import build_criterion, build_universal_model, head_config
from vfmkit.tasks.universal.spec import UniversalSpec

COCO = {"train": {"images": "imgs", "annotations": "ann/panoptic_train.json"}}


def spec(**sections) -> UniversalSpec:
    data = {"dataset": {**COCO, **sections.pop("dataset", {})}, **sections}
    return UniversalSpec.model_validate(data)


def test_defaults_follow_tao_and_oneformer():
    s = spec()
    m = s.model
    assert (m.head, m.neck, m.num_object_queries, m.dec_layers, m.hidden_dim, m.nheads) == (
        "oneformer",
        "simple_pyramid",
        150,
        10,
        256,
        8,
    )
    assert (m.class_weight, m.mask_weight, m.dice_weight, m.no_object_weight, m.contrastive_weight) == (
        2,
        5,
        5,
        0.1,
        0.5,
    )
    assert (m.train_num_points, m.oversample_ratio, m.importance_sample_ratio) == (12544, 3.0, 0.75)
    assert (m.test.object_mask_threshold, m.test.overlap_threshold, m.test.test_topk_per_image) == (0.8, 0.8, 100)
    assert m.text_encoder.n_ctx == 16 and m.pixel_decoder.transformer_enc_layers == 6
    assert s.train.optimizer.lr == 1e-4 and s.train.batch_size >= 2
    assert s.task_probabilities() == {"semantic": 0.33, "instance": 0.33, "panoptic": 0.34}
    assert s.export.task is None and s.predict.task == "panoptic"
    assert "batch_size >= 2" in type(m).model_fields["contrastive_weight"].description
    assert "batch_size >= 2" in type(m).model_fields["head"].description


def test_task_probabilities_by_head_and_format():
    assert spec(model={"head": "mask2former"}).task_probabilities()["panoptic"] == 1.0
    custom = spec(dataset={"task_prob": {"semantic": 0.5, "instance": 0.0, "panoptic": 0.5}})
    assert custom.task_probabilities() == {"semantic": 0.5, "instance": 0.0, "panoptic": 0.5}
    semantic = {
        "format": "semantic_masks",
        "semantic": {"root": "d", "palette": [{"name": "a", "id": 0}, {"name": "b", "id": 1}]},
    }
    assert spec(dataset=semantic).task_probabilities() == {"semantic": 1.0, "instance": 0.0, "panoptic": 0.0}
    assert spec(dataset={"format": "coco_instances"}).task_probabilities()["instance"] == 1.0


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"dataset": {"task_prob": {"semantic": 0.5, "instance": 0.5, "panoptic": 0.5}}}, "add up to 1"),
        ({"dataset": {"format": "semantic_masks"}}, "dataset.semantic"),
        (
            {
                "dataset": {
                    "format": "semantic_masks",
                    "task_prob": {"semantic": 0.5, "instance": 0.5, "panoptic": 0},
                    "semantic": {"root": "d", "palette": [{"name": "a", "id": 0}, {"name": "b", "id": 1}]},
                }
            },
            "semantic masks have no instances",
        ),
        (
            {
                "dataset": {
                    "format": "semantic_masks",
                    "semantic": {"root": "d", "palette": [{"name": "a", "id": 0}, {"name": "b", "id": 0}]},
                }
            },
            "duplicate id",
        ),
        (
            {
                "dataset": {
                    "format": "semantic_masks",
                    "semantic": {
                        "root": "d",
                        "augment": {"hflip": 0},
                        "palette": [{"name": "a", "id": 0}, {"name": "b", "id": 1}],
                    },
                }
            },
            "set dataset.augment",
        ),
        ({"model": {"head": "mask2former"}, "export": {"task": "semantic"}}, "mask2former has none"),
        ({"model": {"num_object_queries": 10}}, "n_ctx"),
        ({"model": {"resolution": 100}}, "multiple of 32"),
        ({"model": {"head": "maskformer"}}, "mask2former"),
    ],
)
def test_invalid_specs_are_refused(sections, message):
    with pytest.raises(ValidationError, match=message):
        spec(**sections)


def test_coco_formats_need_a_train_split():
    with pytest.raises(ValidationError, match="dataset.train"):
        UniversalSpec.model_validate({"dataset": {"format": "coco_panoptic"}})


def test_load_resolves_paths_and_overrides(tmp_path):
    path = tmp_path / "uni.yaml"
    path.write_text(yaml.safe_dump({"dataset": COCO, "model": {"backbone": "test-radio-v2-tiny"}}))
    loaded = load_spec(UniversalSpec, path, ["model.head=mask2former", "dataset.augment.hflip=0"])
    assert loaded.dataset.train.images == tmp_path / "imgs"
    assert loaded.dataset.train.annotations == tmp_path / "ann" / "panoptic_train.json"
    assert loaded.model.head == "mask2former" and loaded.dataset.augment.hflip == 0
    with pytest.raises(SpecError, match="num_object_querys"):
        load_spec(UniversalSpec, path, ["model.num_object_querys=100"])


def test_template_renders_and_loads_back(tmp_path):
    text = render_spec_template(UniversalSpec, "universal", UniversalSpec.example)
    assert "num_object_queries: 150" in text and "contrastive" in text
    path = tmp_path / "uni.yaml"
    path.write_text(text)
    assert load_spec(UniversalSpec, path).dataset.val.images == tmp_path / "data" / "val2017"


@pytest.mark.parametrize("head", ["mask2former", "oneformer"])
def test_the_spec_builds_model_and_criterion(head):
    small = {
        "backbone": "test-radio-v2-tiny",
        "head": head,
        "neck_channels": 32,
        "num_object_queries": 8,
        "hidden_dim": 32,
        "nheads": 4,
        "dim_feedforward": 64,
        "dec_layers": 3,
        "resolution": 64,
        "pixel_decoder": {"conv_dim": 32, "mask_dim": 32, "transformer_enc_layers": 1, "dim_feedforward": 64},
        "text_encoder": {"width": 32, "num_layers": 1, "n_ctx": 2, "context_length": 16},
        "train_num_points": 64,
        "class_weight": 3,
    }
    s = spec(model=small)
    config = head_config(s.model)
    assert config.head == head and config.num_texts == (6 if head == "oneformer" else 0)
    model = build_universal_model(s.model, num_classes=4)
    assert model.config == config and model.num_classes == 4
    criterion = build_criterion(s.model, 4)
    assert criterion.weights == {"loss_ce": 3, "loss_mask": 5, "loss_dice": 5} and criterion.num_points == 64
    tokens = torch.zeros(1, 77, dtype=torch.int64) if head == "oneformer" else None
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, 64, 64), tokens)
    assert out["pred_logits"].shape == (1, 8, 5)
