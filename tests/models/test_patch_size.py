"""Patch-size change at load (DINOv2 14 -> 16 as RF-DETR runs it): published weights load key for key, only the
patch kernel and the position embedding are resampled, the grid follows the new patch size."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vfmkit import load_backbone
from vfmkit.errors import ConfigurationError
from vfmkit.models import registry


@pytest.fixture
def published_dinov2(monkeypatch, tmp_path):
    """A non-test copy of the tiny DINOv2 entry (patch 8, 64 px, 4 registers) and a weights file for it."""
    entry = dataclasses.replace(registry.resolve_entry("test-dinov2-tiny"), id="tiny-dinov2-published", aliases=())
    entry = dataclasses.replace(entry, test_only=False)
    monkeypatch.setitem(registry._ENTRIES, entry.id, entry)
    torch.manual_seed(3)
    source = load_backbone("test-dinov2-tiny")
    with torch.no_grad():
        for param in source.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    return entry.id, path, source


def test_weights_load_key_for_key_and_only_the_patch_tensors_are_resized(published_dinov2):
    name, path, source = published_dinov2
    changed = load_backbone(name, checkpoint=path, patch_size=16)
    expected, got = source.model.state_dict(), changed.model.state_dict()
    assert got.keys() == expected.keys()
    resized = sorted(k for k in got if not torch.equal(got[k], expected[k]))
    assert resized == ["patch_embed.proj.weight", "pos_embed"]
    assert got["patch_embed.proj.weight"].shape == (64, 3, 16, 16)
    assert got["pos_embed"].shape == (1, 4 * 4, 64)  # 64 px at patch 16 (no class token in DINOv2 reg's pos embed)
    prep = changed.preprocessing
    assert (prep.patch_size, prep.resolution_step, prep.preferred_resolution) == (16, 16, (64, 64))


def test_the_grid_follows_the_new_patch_size(published_dinov2):
    name, path, _ = published_dinov2
    changed = load_backbone(name, checkpoint=path, patch_size=16, vitdet_window_size=2)
    with torch.no_grad():
        out = changed(torch.rand(2, 3, 64, 96))
        maps = changed.forward_intermediates(torch.rand(1, 3, 64, 64), [0, 1])
    assert out.grid == (4, 6) and out.features.shape == (2, 24, 64) and out.summary.shape == (2, 64)
    assert [tuple(m.shape) for m in maps] == [(1, 64, 4, 4)] * 2


def test_position_embedding_is_interpolated_and_the_kernel_keeps_the_patch_response(published_dinov2):
    name, path, source = published_dinov2
    changed = load_backbone(name, checkpoint=path, patch_size=16)
    old_pos = source.model.pos_embed.reshape(1, 8, 8, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(old_pos, size=(4, 4), mode="bicubic", align_corners=False, antialias=True)
    got = changed.model.pos_embed.reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # a flat patch has the same embedding at either size (the resampled kernel keeps the kernel's response)
    flat = torch.full((1, 3, 16, 16), 0.3)
    old_conv, new_conv = source.model.patch_embed.proj, changed.model.patch_embed.proj
    with torch.no_grad():
        torch.testing.assert_close(new_conv(flat)[..., 0, 0], old_conv(flat[..., :8, :8])[..., 0, 0], rtol=0, atol=1e-4)


def test_open_clip_towers_change_patch_size_too():
    backbone = load_backbone("test-openclip-tiny", patch_size=16)
    assert backbone.tower.conv1.kernel_size == (16, 16) and backbone.tower.positional_embedding.shape[0] == 1 + 4 * 4
    with torch.no_grad():
        assert backbone(torch.rand(1, 3, 32, 48)).grid == (2, 3)


def test_patch_size_is_refused_for_radio():
    with pytest.raises(ConfigurationError, match="patch_size applies to timm ViT and open_clip"):
        load_backbone("test-radio-v2-tiny", patch_size=16)
