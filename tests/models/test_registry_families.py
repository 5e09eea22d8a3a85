"""Registry entries of the timm and open_clip families: names, metadata, and architectures that really exist."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg

from vfmkit.models.backbones.open_clip_family import build_vision_tower
from vfmkit.models.backbones.timm_family import timm_name_and_kwargs
from vfmkit.models.factory import load_backbone
from vfmkit.models.registry import list_backbones, resolve_entry

FAMILIES = ("timm", "open_clip")
ENTRIES = [e for family in FAMILIES for e in list_backbones(family=family)]
TINY = [e for family in FAMILIES for e in list_backbones(include_test=True, family=family) if e.test_only]


def _ids(entries):
    return [e.id for e in entries]


TIMM_ENTRIES = [e for e in ENTRIES if e.family == "timm"]
OPEN_CLIP_ENTRIES = [e for e in ENTRIES if e.family == "open_clip"]


def test_expected_ids_are_registered() -> None:
    expected = {
        *(f"dinov2-vit-{s}14{r}" for s in "sblg" for r in ("", "-reg")),
        "nv-dinov2-vit-l",
        "openai-clip-vit-b32",
        "openai-clip-vit-b16",
        "openai-clip-vit-l14",
        "openclip-vit-h14-laion2b",
        "openclip-vit-g14-laion2b",
        "eva02-clip-l14",
        "eva02-clip-l14-336",
        "eva02-clip-e14",
        "eva02-clip-e14-plus",
        "nv-clip-vit-l14-224",
        "nv-clip-vit-l14-336",
        "nv-clip-vit-h14-224",
        "siglip2-so400m-p16-256",
        "siglip2-so400m-p16-384",
        "siglip2-so400m-p16-512",
        "siglip2-so400m-p14-224",
        "siglip2-so400m-p14-384",
        "siglip2-so400m-p16-naflex",
    }
    assert expected <= set(_ids(ENTRIES))
    assert {"test-dinov2-tiny", "test-clip-tiny", "test-siglip-tiny", "test-openclip-tiny"} <= set(_ids(TINY))


@pytest.mark.parametrize(
    ("alias", "entry_id"),
    [
        ("vit_small_patch14_dinov2", "dinov2-vit-s14"),
        ("vit_large_dinov2", "dinov2-vit-l14"),
        ("vit_giant_patch14_reg4_dinov2_swiglu", "dinov2-vit-g14-reg"),
        ("vit_large_nvdinov2", "nv-dinov2-vit-l"),
        ("vit_large_patch14_dinov2_swiglu", "nv-dinov2-vit-l"),
        ("vit_l_14_siglip_clipa_224", "nv-clip-vit-l14-224"),
        ("vit_l_14_siglip_clipa_336", "nv-clip-vit-l14-336"),
        ("vit_h_14_siglip_clipa_224", "nv-clip-vit-h14-224"),
        ("ViT-L-14-SigLIP-CLIPA-224", "nv-clip-vit-l14-224"),
        ("siglip2-so400m-patch16-256", "siglip2-so400m-p16-256"),
        ("siglip2_so400m_patch16_512", "siglip2-so400m-p16-512"),
        ("siglip2_so400m", "siglip2-so400m-p16-naflex"),
        ("EVA02-L-14-336", "eva02-clip-l14-336"),
        ("ViT-B-32", "openai-clip-vit-b32"),
        ("ViT-H-14", "openclip-vit-h14-laion2b"),
    ],
)
def test_tao_and_upstream_aliases(alias: str, entry_id: str) -> None:
    assert resolve_entry(alias).id == entry_id
    assert resolve_entry(alias.upper()).id == entry_id


@pytest.mark.parametrize("entry", ENTRIES, ids=_ids(ENTRIES))
def test_entry_metadata(entry) -> None:
    for name in (entry.id, *entry.aliases):
        assert resolve_entry(name) is entry
    assert entry.license and entry.description and not entry.test_only
    assert entry.params_m and entry.params_m > 1
    assert entry.summary_dim > 0 and entry.feature_dim > 0
    assert entry.preferred_resolution % entry.patch_size == 0
    assert entry.max_resolution >= entry.preferred_resolution
    assert len(entry.mean) == len(entry.std) == 3
    if entry.source is None:
        assert "NGC" in entry.extra["weights"] and "NGC" in entry.description
    else:
        assert entry.source == f"hf-hub:timm/{entry.arch['timm_name']}"


@pytest.mark.parametrize("entry", TIMM_ENTRIES, ids=_ids(TIMM_ENTRIES))
def test_timm_architecture_exists(entry) -> None:
    name = entry.arch["timm_name"]
    assert timm.is_model(name)
    if entry.source is not None:
        assert name in timm.list_pretrained(name), f"timm has no pretrained tag {name}"
        cfg = get_pretrained_cfg(name)
        assert tuple(cfg.mean) == entry.mean and tuple(cfg.std) == entry.std
        assert cfg.input_size[-1] == entry.preferred_resolution
    arch, kwargs = timm_name_and_kwargs(entry)
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    assert (model.embed_dim, model.num_features) == (entry.feature_dim, entry.summary_dim)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(entry.params_m, rel=0.01)


@pytest.mark.parametrize("entry", OPEN_CLIP_ENTRIES, ids=_ids(OPEN_CLIP_ENTRIES))
def test_open_clip_tower_config(entry) -> None:
    with torch.device("meta"):
        tower = build_vision_tower(entry)
    assert (tower.conv1.out_channels, tower.output_dim) == (entry.feature_dim, entry.summary_dim)
    assert tower.grid_size == (entry.preferred_resolution // 14,) * 2
    assert sum(p.numel() for p in tower.parameters()) / 1e6 == pytest.approx(entry.params_m, rel=0.01)
    assert entry.arch["model_cfg"]["init_logit_bias"] == -10.0  # SigLIP loss


@pytest.mark.parametrize("entry", TINY, ids=_ids(TINY))
def test_tiny_variants(entry) -> None:
    assert entry.test_only and entry.source is None
    model = load_backbone(entry.id, pretrained=False)
    assert (model.embed_dim, model.summary_dim) == (entry.feature_dim, entry.summary_dim)
    assert model.preprocessing.mean == entry.mean and model.patch_size == entry.patch_size
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(entry.params_m, rel=0.15)
    with torch.no_grad():
        out = model(torch.rand(1, 3, entry.preferred_resolution, entry.preferred_resolution))
    assert out.summary.shape == (1, entry.summary_dim)
