"""Every RADIO generation (v2, v3, v4 token layouts and the v2.5-g DINOv2 student, patch 14) works as the backbone
of segmentation and change detection, with both necks: a forward and a training step reach the trainable parts."""

from __future__ import annotations

import pytest
import torch

from vfmkit import load_backbone
from vfmkit.tasks.change.model import build_change_model
from vfmkit.tasks.change.spec import ChangeSpec
from vfmkit.tasks.segment.model import Segmenter
from vfmkit.tasks.segment.spec import SegmentModelSpec

GENERATIONS = ["test-radio-v2-tiny", "test-radio-v3-tiny", "test-radio-v4-tiny", "test-radio-v2.5g-tiny"]


def _size(backbone: str, stride: int = 16) -> int:
    """A side that is a multiple of the patch (14 for the DINOv2 student) and of ``stride``."""
    return (224 if stride == 32 else 56) if "2.5g" in backbone else 64


@pytest.mark.parametrize("backbone", GENERATIONS)
@pytest.mark.parametrize("neck", ["vit_adapter", "simple_pyramid"])
def test_segmenter_trains_on_every_generation(backbone, neck):
    size = _size(backbone)
    spec = SegmentModelSpec(backbone=backbone, neck=neck, neck_channels=32, decoder_channels=32, resolution=size)
    model = Segmenter(load_backbone(backbone), 3, spec).train()
    logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2, 3, size // 4, size // 4)
    logits.logsumexp(dim=1).mean().backward()
    assert model.head.classifier.weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())  # frozen by default


@pytest.mark.parametrize("backbone", GENERATIONS)
def test_change_segmenter_runs_on_every_generation(backbone, tmp_path):
    spec = ChangeSpec.model_validate(
        {
            "dataset": {"root": str(tmp_path), "format": "levir"},
            "model": {
                "backbone": backbone,
                "neck": "vit_adapter",
                "neck_channels": 32,
                "decoder_channels": 32,
                "resolution": _size(backbone, stride=32),
            },
        }
    )
    model = build_change_model(spec).eval()
    size = _size(backbone, stride=32)
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, size, size), torch.rand(1, 3, size, size))
    final = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
    assert final.shape[:2] == (1, 2)
