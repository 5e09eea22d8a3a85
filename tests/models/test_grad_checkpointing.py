"""Activation checkpointing works on every backbone family and through every neck: with it on, each block's forward
runs again in the backward pass (torch.utils.checkpoint recomputes it) and the gradients equal those with it off."""

from __future__ import annotations

import pytest
import torch

from vfmkit import load_backbone
from vfmkit.models.necks import build_neck

FAMILIES = ["test-radio-v2-tiny", "test-dinov2-tiny", "test-clip-tiny", "test-siglip-tiny", "test-openclip-tiny"]


def _block_calls(backbone) -> list[int]:
    calls = [0]
    for block in backbone.token_blocks():
        block.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))  # recompute may stop early
    return calls


def _gradients(model_id: str, checkpointing: bool, run) -> tuple[dict[str, torch.Tensor], int, int]:
    """Gradients of every trainable parameter after one backward pass, the block forward calls and block count."""
    torch.manual_seed(0)
    backbone = load_backbone(model_id, pretrained=False)
    module = run.build(backbone)
    module.train()
    calls = _block_calls(backbone)
    module.set_grad_checkpointing(checkpointing)
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 64)
    run.loss(module, images).backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return grads, calls[0], len(backbone.token_blocks())


class _Backbone:
    build = staticmethod(lambda backbone: backbone)
    loss = staticmethod(lambda model, images: model(images).summary.square().mean() + model(images).features.mean())


class _Intermediates:
    build = staticmethod(lambda backbone: backbone)
    loss = staticmethod(lambda model, images: sum(m.square().mean() for m in model.forward_intermediates(images, 2)))


class _Neck:
    def __init__(self, kind: str, freeze: bool):
        self.kind, self.freeze = kind, freeze

    def build(self, backbone):
        return build_neck(self.kind, backbone, out_channels=32, freeze_backbone=self.freeze, summary_fusion=True)

    @staticmethod
    def loss(model, images):
        return sum(level.square().mean() for level in model(images).features)


RUNS = {
    "backbone": _Backbone(),
    "intermediates": _Intermediates(),
    "vit_adapter_frozen": _Neck("vit_adapter", True),
    "simple_pyramid_finetune": _Neck("simple_pyramid", False),
}


@pytest.mark.parametrize("run_name", list(RUNS))
@pytest.mark.parametrize("model_id", FAMILIES)
def test_checkpointing_recomputes_blocks_and_keeps_gradients(model_id: str, run_name: str) -> None:
    run = RUNS[run_name]
    plain, plain_calls, blocks = _gradients(model_id, False, run)
    checked, checked_calls, _ = _gradients(model_id, True, run)
    forwards = plain_calls // blocks  # the loss may run the model more than once
    assert plain_calls == forwards * blocks
    assert checked_calls == 2 * plain_calls, "checkpointed blocks run again in the backward pass"
    assert plain and plain.keys() == checked.keys()
    for name in plain:
        torch.testing.assert_close(checked[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_no_recompute_without_gradients() -> None:
    backbone = load_backbone("test-radio-v2-tiny", pretrained=False)
    backbone.set_grad_checkpointing(True)
    calls = _block_calls(backbone)
    with torch.no_grad():
        backbone(torch.rand(1, 3, 32, 32))
    assert calls[0] == len(backbone.token_blocks())
