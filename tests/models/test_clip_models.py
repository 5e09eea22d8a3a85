"""CLIP models: every family's tiny model through the real builders, parity with open_clip, text-only loading,
registry namespaces and offline errors."""

from __future__ import annotations

import dataclasses
import math

import open_clip
import pytest
import torch
from open_clip.model import CLIP, CustomTextCLIP
from safetensors.torch import save_file

from vfmkit.errors import ModelNotFoundError, WeightsError
from vfmkit.models.clip_zoo import CLIP_MODELS, load_clip_model
from vfmkit.models.factory import load_backbone
from vfmkit.models.registry import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, resolve_entry
from vfmkit.models.text.towers import build_text_tower, load_text_weights
from vfmkit.models.text.zoo import TEXT_TOWERS, text_model_config

TINY = ["test-openclip-clip-tiny", "test-nvclip-clip-tiny", "test-siglip2-clip-tiny", "test-radio-clip-tiny"]


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_build_offline(name: str) -> None:
    model = load_clip_model(name)
    side = model.preprocessing.preferred_resolution[0]
    images = torch.rand(3, 3, side, side)
    ids = model.tokenize(["a red circle", "a blue square", "a green cross"])
    with torch.no_grad():
        image_embeddings, text_embeddings = model(images, ids)
        raw = model.encode_image(images, normalize=False)
    assert image_embeddings.shape == text_embeddings.shape == (3, model.embed_dim)
    torch.testing.assert_close(image_embeddings.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_embeddings.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), image_embeddings)
    assert model.logits(image_embeddings, text_embeddings).shape == (3, 3)
    sigmoid = CLIP_MODELS.resolve(name).sigmoid
    assert (model.logit_bias is not None) == sigmoid
    assert model.logit_scale.item() == pytest.approx(math.log(10) if sigmoid else math.log(1 / 0.07))
    again = load_clip_model(name)
    torch.testing.assert_close(again.encode_image(images), image_embeddings)  # seeded random init


def test_radio_clip_image_embedding_is_the_adaptor_summary() -> None:
    model = load_clip_model("test-radio-clip-tiny")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.visual.backbone(images).adaptors["siglip"].summary
        torch.testing.assert_close(model.encode_image(images, normalize=False), expected)
    with pytest.raises(ModelNotFoundError, match="no CLIP adaptor 'clip'"):
        load_clip_model("test-radio-clip-tiny", adaptor_name="clip")


def _open_clip_reference(vision_cfg: dict, text_name: str, custom: bool) -> torch.nn.Module:
    config = text_model_config(TEXT_TOWERS.resolve(text_name))
    cls = CustomTextCLIP if custom else CLIP
    torch.manual_seed(1)
    model = cls(embed_dim=config["embed_dim"], vision_cfg=vision_cfg, text_cfg=config["text_cfg"], init_logit_bias=-3.0)
    with torch.no_grad():
        model.logit_scale.fill_(4.2)
    return model.eval()


@pytest.fixture
def file_clip(monkeypatch) -> str:
    """A non-test copy of ``test-openclip-clip-tiny`` (the weights rule refuses a file for a test model)."""
    entry = dataclasses.replace(CLIP_MODELS.resolve("test-openclip-clip-tiny"), id="file-openclip-tiny", aliases=())
    entry = dataclasses.replace(entry, test_only=False)
    monkeypatch.setitem(CLIP_MODELS._entries, entry.id, entry)
    return entry.id


def test_open_clip_checkpoint_loads_both_towers_exactly(tmp_path, file_clip) -> None:
    """A full open_clip CLIP checkpoint (top-level text keys) gives exactly open_clip's embeddings and scalars."""
    vision_cfg = resolve_entry("test-openclip-tiny").arch["model_cfg"]["vision_cfg"]
    reference = _open_clip_reference(vision_cfg, "test-clip-text-tiny", custom=False)
    file = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(file))
    model = load_clip_model(file_clip, checkpoint=file)
    images = torch.rand(2, 3, 64, 64)
    ids = model.tokenize(["a red circle", "two blue squares"])
    normalised = (images - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), reference.encode_image(normalised, normalize=True))
        torch.testing.assert_close(model.encode_text(ids), reference.encode_text(ids, normalize=True))
    assert model.logit_scale.item() == pytest.approx(4.2) and model.logit_bias.item() == pytest.approx(-3.0)
    report = model.load_reports["text"]
    assert not report.missing and not report.unexpected and any(k.startswith("visual.") for k in report.ignored)


def test_text_only_loading_of_a_custom_text_checkpoint(tmp_path) -> None:
    """CustomTextCLIP layout (``text.*``), read lazily from safetensors; wrong shapes and missing files fail."""
    vision_cfg = resolve_entry("test-openclip-tiny").arch["model_cfg"]["vision_cfg"]
    reference = _open_clip_reference(vision_cfg, "test-siglip-text-tiny", custom=True)
    file = tmp_path / "custom.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(file))
    tower = build_text_tower(text_model_config(TEXT_TOWERS.resolve("test-siglip-text-tiny")), "t")
    report, scalars = load_text_weights(tower, file, "custom")
    ids = open_clip.tokenize(["a red circle"], context_length=16)
    with torch.no_grad():
        torch.testing.assert_close(tower(ids), reference.encode_text(ids))
    assert scalars == pytest.approx({"logit_scale": 4.2, "logit_bias": -3.0})
    assert len(report.loaded) == len(tower.state_dict())
    wide = build_text_tower(text_model_config(TEXT_TOWERS.resolve("test-siglip2-text-tiny")), "wide")
    with pytest.raises(WeightsError, match=r"text.text_projection.\w+ has shape"):
        load_text_weights(wide, file, "custom")
    with pytest.raises(WeightsError, match="not found"):
        load_text_weights(tower, tmp_path / "missing.bin", "missing")


def test_clip_namespace_is_separate_from_backbones() -> None:
    """``c-radio_v3-h`` is a CLIP alias (RADIO-CLIP with the siglip2-g head) and still a backbone alias."""
    entry = CLIP_MODELS.resolve("c-radio_v3-h")
    assert entry.family == "radio" and entry.default_adaptor == "siglip2-g"
    assert entry.text_id("clip") == "dfn-clip-h14-378-text"
    assert resolve_entry("c-radio_v3-h").id == "c-radio-v3-h"
    assert load_backbone("test-radio-v2-tiny").summary_dim == 192
    assert CLIP_MODELS.resolve("siglip2-so400m-patch16-256").id == "siglip2-so400m-p16-256"
    assert CLIP_MODELS.resolve("ViT-H-14-SigLIP-CLIPA-224").id == "nv-clip-vit-h14-224"
    radio = {e.id for e in CLIP_MODELS.entries() if e.family == "radio"}
    assert {
        "c-radio-v2-b",
        "radio-v2.5-h",
        "c-radio-v3-b",
        "c-radio-v3-g",
        "c-radio-v4-h",
        "c-radio-v4-so400m",
    } <= radio
    with pytest.raises(ModelNotFoundError, match="did you mean"):
        CLIP_MODELS.resolve("c-radio_v3-hh")


def test_published_weights_fail_offline_with_a_clear_message() -> None:
    with pytest.raises(WeightsError, match="not in the Hugging Face cache"):
        load_clip_model("siglip2-so400m-patch16-256")
    with pytest.raises(WeightsError, match="NGC"):
        load_clip_model("ViT-L-14-SigLIP-CLIPA-224")


def test_real_configs_build_their_text_towers_on_meta() -> None:
    """Every registered text tower's open_clip config builds (on the meta device: no memory) with its tokenizer's
    context length and the width the CLIP entries pair it with."""
    for entry in TEXT_TOWERS.entries():
        with torch.device("meta"):
            tower = build_text_tower(text_model_config(entry), entry.id)
        assert tower.output_dim == entry.embed_dim
    assert TEXT_TOWERS.resolve("ViT-gopt-16-SigLIP2-384").embed_dim == 1536
    assert TEXT_TOWERS.resolve("dfn-clip-h14-378-text").embed_dim == 1024
