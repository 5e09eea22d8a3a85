"""The registry: canonical ids, TAO aliases, entry facts, and RADIO architectures matching their published sizes."""

from __future__ import annotations

import pytest
import torch

from vfmkit import list_backbones, resolve_entry
from vfmkit.errors import ModelNotFoundError
from vfmkit.models.backbones.radio.config import RadioConfig
from vfmkit.models.backbones.radio.model import RadioBackbone
from vfmkit.models.registry import ModelEntry, register


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("c_radio_v2_vit_base_patch16", "c-radio-v2-b"),
        ("radio_v2-b", "c-radio-v2-b"),
        ("c_radio_v2_vit_base_patch16_224", "c-radio-v2-b"),
        ("c-radio_v3-b", "c-radio-v3-b"),
        ("C-RADIO_V3-L", "c-radio-v3-l"),
        ("c_radio_v3_vit_huge_patch16_reg4_dinov2", "c-radio-v3-h"),
        ("c_radio_v4_vit_so400m_patch16", "c-radio-v4-so400m"),
        ("radio_v2.5-g", "radio-v2.5-g"),
    ],
)
def test_aliases_resolve_to_one_entry(alias, canonical):
    assert resolve_entry(alias) is resolve_entry(canonical)


def test_required_radio_entries_exist():
    ids = {e.id for e in list_backbones(family="radio")}
    expected = {f"c-radio-v2-{s}" for s in "blhg"} | {f"c-radio-v3-{s}" for s in "blhg"}
    expected |= {"c-radio-v4-h", "c-radio-v4-so400m"} | {f"radio-v2.5-{s}" for s in "blhg"}
    assert expected <= ids
    assert not any(e.test_only for e in list_backbones())
    assert {"test-radio-v2-tiny", "test-radio-v3-tiny", "test-radio-v4-tiny"} <= {
        e.id for e in list_backbones(include_test=True)
    }


@pytest.mark.parametrize("entry", list_backbones(family="radio"), ids=lambda e: e.id)
def test_radio_entry_facts(entry):
    assert entry.source and entry.source.startswith("hf-hub:nvidia/")
    assert ("non-commercial" in entry.license) == entry.id.startswith("radio-v2.5")
    arch = {k: v for k, v in entry.arch.items() if k != "adaptors"}
    with torch.device("meta"):
        model = RadioBackbone(RadioConfig(**arch))
    assert model.summary_dim == entry.summary_dim and model.embed_dim == entry.feature_dim
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(entry.params_m, abs=0.1)


def test_published_widths():
    dims = {e.id: (e.feature_dim, e.summary_dim) for e in list_backbones(family="radio")}
    assert dims["c-radio-v3-h"] == (1280, 3840)
    assert dims["c-radio-v4-h"] == (1280, 2560)
    assert dims["c-radio-v4-so400m"] == (1152, 2304)
    assert dims["radio-v2.5-b"] == (768, 2304)


def test_duplicate_names_are_refused():
    entry = resolve_entry("c-radio-v3-b")
    clash = ModelEntry(**{**entry.__dict__, "id": "some-new-id", "aliases": ("radio_v3-b",)})
    with pytest.raises(ValueError, match="already taken"):
        register(clash)


def test_unknown_id_error_is_a_user_error():
    with pytest.raises(ModelNotFoundError, match="vfm models"):
        resolve_entry("no-such-model-anywhere")
