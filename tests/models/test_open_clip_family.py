"""The open_clip family: tiny image towers through the real builder, exactness against the tower, weight loading."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from open_clip.transformer import VisionTransformer

from vfmkit.errors import ModelNotFoundError, WeightsError
from vfmkit.models.backbones.open_clip_family import OpenClipVisionBackbone, build_open_clip, build_vision_tower
from vfmkit.models.factory import load_backbone
from vfmkit.models.registry import resolve_entry

TINY_OPEN_CLIP = ["test-openclip-tiny", "test-nvclip-tiny"]


@pytest.fixture(scope="module", params=TINY_OPEN_CLIP)
def tiny(request) -> OpenClipVisionBackbone:
    torch.manual_seed(0)
    return load_backbone(request.param, pretrained=False)


def _normalised(model: OpenClipVisionBackbone, images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(model.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(1, 3, 1, 1)
    return (images - mean) / std


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_output_shapes(tiny: OpenClipVisionBackbone, size: tuple[int, int]) -> None:
    images = torch.rand(2, 3, *size)
    grid = (size[0] // 8, size[1] // 8)
    with torch.no_grad():
        out = tiny(images)
        maps = tiny.forward_intermediates(images, indices=2)
        picked = tiny.forward_intermediates(images, indices=[-1])
    assert isinstance(tiny, OpenClipVisionBackbone) and not tiny.training
    assert (tiny.embed_dim, tiny.summary_dim, tiny.num_blocks) == (64, 32, 2)
    assert out.summary.shape == (2, 32)
    assert out.features.shape == (2, grid[0] * grid[1], 64)
    assert out.grid == grid and out.spatial().shape == (2, 64, *grid)
    assert [m.shape for m in maps] == [(2, 64, *grid)] * 2
    torch.testing.assert_close(picked[0], maps[1], rtol=0, atol=0)
    assert torch.isfinite(out.summary).all()


def test_matches_tower_at_trained_resolution(tiny: OpenClipVisionBackbone) -> None:
    images = torch.rand(2, 3, 64, 64)
    tower = tiny.tower
    with torch.no_grad():
        out = tiny(images)
        x = _normalised(tiny, images)
        tower.output_tokens = True
        try:
            pooled, tokens = tower(x)
        finally:
            tower.output_tokens = False
        reference = tower.forward_intermediates(x, indices=[0, 1], intermediates_only=True)["image_intermediates"]
        ours = tiny.forward_intermediates(images, indices=[0, 1])
        unnormalised = tower(images)
    assert torch.equal(out.summary, pooled)
    assert torch.equal(out.features, tokens)
    for mine, theirs in zip(ours, reference, strict=True):
        assert torch.equal(mine, theirs)
    assert not torch.allclose(out.summary, unnormalised)  # normalisation is applied


def test_position_embedding_is_resampled_off_grid(tiny: OpenClipVisionBackbone) -> None:
    assert tiny._position_embedding((8, 8)) is tiny.tower.positional_embedding
    resampled = tiny._position_embedding((6, 10))
    assert resampled.shape == (1 + 60, 64)
    torch.testing.assert_close(resampled[0], tiny.tower.positional_embedding[0])  # class position kept


def test_no_weight_decay(tiny: OpenClipVisionBackbone) -> None:
    assert tiny.no_weight_decay() == {"tower.positional_embedding", "tower.class_embedding"}


def test_rejects_bad_resolution(tiny: OpenClipVisionBackbone) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        tiny(torch.rand(1, 3, 64, 70))


@pytest.mark.parametrize("prefix", ["visual.", "module.visual.", ""])
def test_local_checkpoint_roundtrip(tmp_path, prefix: str) -> None:
    entry = resolve_entry("test-nvclip-tiny")
    torch.manual_seed(1)
    source = build_open_clip(entry, pretrained=False)
    state = {f"{prefix}{k}": v for k, v in source.tower.state_dict().items()}
    if prefix:
        state["text.token_embedding.weight"] = torch.zeros(4, 4)  # a full CLIP checkpoint also carries the text tower
    file = tmp_path / "nvclip.pth"
    torch.save({"state_dict": state}, file)
    torch.manual_seed(2)
    loaded = build_open_clip(entry, pretrained=True, checkpoint=file)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(images).summary, source(images).summary)


def test_bad_checkpoints_raise(tmp_path) -> None:
    entry = resolve_entry("test-nvclip-tiny")
    other = build_open_clip(resolve_entry("test-openclip-tiny"), pretrained=False)  # has ln_pre, which CLIPA lacks
    file = tmp_path / "other.pth"
    torch.save(other.tower.state_dict(), file)
    with pytest.raises(WeightsError, match="does not fit"):
        build_open_clip(entry, pretrained=True, checkpoint=file)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        build_open_clip(entry, pretrained=True, checkpoint=garbage)
    with pytest.raises(WeightsError, match="not found"):
        build_open_clip(entry, pretrained=True, checkpoint=tmp_path / "absent.pth")


def test_ngc_only_entry_needs_local_file() -> None:
    entry = resolve_entry("ViT-H-14-SigLIP-CLIPA-224")
    assert entry.id == "nv-clip-vit-h14-224" and entry.family == "open_clip"
    with pytest.raises(WeightsError, match="NGC"):
        build_open_clip(entry, pretrained=True)


def test_builds_from_open_clip_model_name() -> None:
    entry = dataclasses.replace(resolve_entry("test-openclip-tiny"), arch={"model_name": "ViT-B-32"})
    with torch.device("meta"):
        tower = build_vision_tower(entry)
    assert isinstance(tower, VisionTransformer)
    assert tower.conv1.out_channels == 768 and tower.output_dim == 512


def test_unsupported_configs_are_rejected() -> None:
    base = resolve_entry("test-openclip-tiny")
    cfg = base.arch["model_cfg"]
    attn_pool = {**cfg, "vision_cfg": {**cfg["vision_cfg"], "attentional_pool": True}}
    with pytest.raises(ModelNotFoundError, match="supported"):
        build_vision_tower(dataclasses.replace(base, arch={"model_cfg": attn_pool}))
    with pytest.raises(ModelNotFoundError, match="no model"):
        build_vision_tower(dataclasses.replace(base, arch={"model_name": "ViT-Nope-99"}))
