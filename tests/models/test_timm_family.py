"""The timm family: tiny random-init variants through the real builder, normalisation, and weight loading."""

from __future__ import annotations

import dataclasses

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

from vfmkit.errors import ModelNotFoundError, WeightsError
from vfmkit.models.backbones.timm_family import TimmBackbone, build_timm
from vfmkit.models.factory import build_from_entry, load_backbone
from vfmkit.models.registry import resolve_entry

TINY_TIMM = ["test-dinov2-tiny", "test-clip-tiny", "test-siglip-tiny"]
RESOLUTIONS = [(64, 64), (48, 80)]


@pytest.fixture(scope="module", params=TINY_TIMM)
def tiny(request) -> TimmBackbone:
    torch.manual_seed(0)
    return load_backbone(request.param, pretrained=False)


def _normalised(model: TimmBackbone, images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(model.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(1, 3, 1, 1)
    return (images - mean) / std


@pytest.mark.parametrize("size", RESOLUTIONS)
def test_output_shapes(tiny: TimmBackbone, size: tuple[int, int]) -> None:
    images = torch.rand(2, 3, *size)
    grid = (size[0] // 8, size[1] // 8)
    with torch.no_grad():
        out = tiny(images)
        maps = tiny.forward_intermediates(images, indices=2)
        picked = tiny.forward_intermediates(images, indices=[0, -1])
    assert isinstance(tiny, TimmBackbone) and not tiny.training
    assert out.summary.shape == (2, tiny.summary_dim) == (2, 64)
    assert out.features.shape == (2, grid[0] * grid[1], tiny.embed_dim)
    assert out.grid == grid
    assert out.spatial().shape == (2, tiny.embed_dim, *grid)
    assert len(maps) == 2 and len(picked) == 2
    assert all(m.shape == (2, tiny.embed_dim, *grid) for m in maps + picked)
    torch.testing.assert_close(picked[1], maps[1])


def test_matches_timm_on_normalised_input(tiny: TimmBackbone) -> None:
    images = torch.rand(2, 3, 48, 80)
    with torch.no_grad():
        out = tiny(images)
        x = _normalised(tiny, images)
        tokens = tiny.model.forward_features(x)
        pre_logits = tiny.model.forward_head(tokens, pre_logits=True)
        direct = tiny.model(x)  # num_classes=0: forward() returns the pre-logits
        maps = tiny.model.forward_intermediates(x, indices=[1], output_fmt="NCHW", intermediates_only=True)
        raw = tiny.model.forward_features(images)
    assert torch.equal(out.features, tokens[:, tiny.num_prefix_tokens :])
    assert torch.equal(out.summary, pre_logits)
    assert torch.equal(out.summary, direct)
    assert torch.equal(tiny.forward_intermediates(images, indices=[1])[0], maps[0])
    assert not torch.allclose(out.features, raw[:, tiny.num_prefix_tokens :])  # normalisation is applied


def test_prefix_tokens_split() -> None:
    model = load_backbone("test-dinov2-tiny", pretrained=False)
    assert model.num_prefix_tokens == 5  # class token + 4 registers
    siglip = load_backbone("test-siglip-tiny", pretrained=False)
    assert siglip.num_prefix_tokens == 0


def test_rejects_bad_input(tiny: TimmBackbone) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        tiny(torch.rand(1, 3, 60, 64))
    with pytest.raises(ValueError, match="RGB"):
        tiny(torch.rand(1, 1, 64, 64))


def test_no_weight_decay_names_parameters(tiny: TimmBackbone) -> None:
    names = tiny.no_weight_decay()
    assert "model.pos_embed" in names
    assert names <= {name for name, _ in tiny.named_parameters()}


def test_local_checkpoint_roundtrip(tmp_path) -> None:
    entry = resolve_entry("test-dinov2-tiny")
    torch.manual_seed(1)
    source = build_timm(entry, pretrained=False)
    file = tmp_path / "tiny.safetensors"
    save_file(source.model.state_dict(), str(file))
    torch.manual_seed(2)
    loaded = build_timm(entry, pretrained=True, checkpoint=file)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).features, source(images).features, rtol=0, atol=0)


def _fake_hub_cache(cache, repo: str, state: dict[str, torch.Tensor]) -> None:
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123456789abcdef")
    save_file(state, str(snapshot / "model.safetensors"))


def _private_offline_cache(monkeypatch, cache) -> None:
    """HF_HUB_OFFLINE=1 and an empty cache under ``cache`` (env for subprocesses, constants for this process)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_loads_from_offline_hub_cache(tmp_path, monkeypatch) -> None:
    torch.manual_seed(3)
    reference = load_backbone("test-clip-tiny", pretrained=False)
    _fake_hub_cache(tmp_path / "hub", "vfmkit-test/tiny-clip", reference.model.state_dict())
    _private_offline_cache(monkeypatch, tmp_path / "hub")
    entry = dataclasses.replace(resolve_entry("test-clip-tiny"), source="hf-hub:vfmkit-test/tiny-clip", test_only=False)
    loaded = build_from_entry(entry, pretrained=True)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(images).summary, reference(images).summary)


def test_absent_cache_raises_weights_error(tmp_path, monkeypatch) -> None:
    _private_offline_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(WeightsError) as info:
        load_backbone("dinov2-vit-s14", pretrained=True)
    message = str(info.value)
    assert "timm/vit_small_patch14_dinov2.lvd142m" in message and "dinov2-vit-s14" in message
    assert str(tmp_path / "hub") in message
    assert "huggingface-cli download" in message


def test_mismatched_checkpoint_raises(tmp_path) -> None:
    clip = load_backbone("test-clip-tiny", pretrained=False)
    file = tmp_path / "clip.safetensors"
    save_file(clip.model.state_dict(), str(file))
    with pytest.raises(WeightsError, match="test-dinov2-tiny"):
        build_timm(resolve_entry("test-dinov2-tiny"), pretrained=True, checkpoint=file)
    with pytest.raises(WeightsError, match="does not exist"):
        build_timm(resolve_entry("test-dinov2-tiny"), pretrained=True, checkpoint=tmp_path / "missing.pth")


def test_ngc_only_entry_needs_local_file() -> None:
    entry = resolve_entry("vit_large_nvdinov2")
    assert entry.id == "nv-dinov2-vit-l"
    with pytest.raises(WeightsError, match="NGC"):
        build_timm(entry, pretrained=True)


def test_adaptors_are_rejected() -> None:
    with pytest.raises(ModelNotFoundError, match="adaptor"):
        load_backbone("test-clip-tiny", adaptors=["siglip"], pretrained=False)
