"""Parameter groups (no decay on norms/biases/tokens, layer-wise lr decay) and lr schedules."""

from __future__ import annotations

import pytest
import torch

from vfmkit import load_backbone
from vfmkit.engine.optim import build_optimizer, build_scheduler, layer_id, lr_lambda, param_groups
from vfmkit.spec.base import OptimizerSpec, SchedulerSpec


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.patch_generator.pos_embed", 0),
        ("model.blocks.0.attn.qkv.weight", 1),
        ("model.blocks.11.mlp.fc2.bias", 12),
        ("model.norm.weight", 13),
        ("model.visual.transformer.resblocks.3.ln_1.weight", 4),
        ("model.cls_token", 0),
    ],
)
def test_layer_ids(name, expected):
    assert layer_id(name, 12) == expected


def test_groups_decay_and_layer_scales():
    backbone = load_backbone("test-radio-v2-tiny")
    groups = param_groups(
        backbone.named_parameters(),
        lr=1.0,
        weight_decay=0.05,
        layer_decay=0.5,
        num_blocks=backbone.num_blocks,
        no_weight_decay=backbone.no_weight_decay(),
    )
    by_name = {name: g for g in groups for name in g["names"]}
    assert by_name["model.blocks.1.attn.qkv.weight"]["weight_decay"] == 0.05
    assert by_name["model.blocks.1.attn.qkv.bias"]["weight_decay"] == 0.0
    assert by_name["model.blocks.1.norm1.weight"]["weight_decay"] == 0.0
    assert by_name["model.patch_generator.pos_embed"]["weight_decay"] == 0.0
    depth = backbone.num_blocks  # 2: embeddings get 0.5**3, block 0 0.5**2, block 1 0.5, after-blocks 1
    assert by_name["model.patch_generator.embedder.weight"]["lr"] == pytest.approx(0.5 ** (depth + 1))
    assert by_name["model.blocks.0.attn.qkv.weight"]["lr"] == pytest.approx(0.5**depth)
    assert by_name["model.blocks.1.attn.qkv.weight"]["lr"] == pytest.approx(0.5)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in backbone.parameters() if p.requires_grad)


def test_frozen_parameters_are_left_out():
    layer = torch.nn.Linear(3, 3)
    layer.weight.requires_grad_(False)
    groups = param_groups(layer.named_parameters(), lr=0.1, weight_decay=0.1)
    assert [n for g in groups for n in g["names"]] == ["bias"]


def test_warmup_then_cosine_to_min_ratio():
    cosine = SchedulerSpec(type="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    factor = lr_lambda(cosine, steps_per_epoch=10, total_steps=100)
    warm = [factor(s) for s in range(10)]
    assert warm == sorted(warm) and warm[0] < 0.2 and warm[-1] <= 1.0
    assert factor(10) == pytest.approx(1.0)
    assert factor(100) == pytest.approx(0.1)
    assert factor(55) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-6)


def test_step_and_linear_schedules():
    step = lr_lambda(SchedulerSpec(type="step", warmup_epochs=0, step_epochs=2, gamma=0.5), 10, 100)
    assert [step(s) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    linear = lr_lambda(SchedulerSpec(type="linear", warmup_epochs=0, min_lr_ratio=0.0), 10, 100)
    assert linear(50) == pytest.approx(0.5)


def test_scheduler_drives_every_group():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    groups = [
        {"params": list(model[0].parameters()), "lr": 0.5, "names": []},
        {"params": list(model[1].parameters()), "lr": 1.0, "names": []},
    ]
    optimizer = build_optimizer(groups, OptimizerSpec(type="sgd", lr=1.0))
    scheduler = build_scheduler(optimizer, SchedulerSpec(type="linear", warmup_epochs=0, min_lr_ratio=0.0), 5, 2)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.25, 0.5])
