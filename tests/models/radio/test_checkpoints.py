"""Checkpoint reading: safe loading, key reports, layouts, sources and their errors."""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.conftest import radio_fixtures

from vfmkit import load_backbone
from vfmkit.errors import ModelNotFoundError, VfmError, WeightsError


def _copy_hf(tmp_path, folder="radio-tiny-v2"):
    target = tmp_path / folder
    shutil.copytree(radio_fixtures() / folder, target)
    return target


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth.tar"
    payload = {"args": argparse.Namespace(model="x"), "state_dict": {}, "extra": pathlib.PurePosixPath("/etc")}
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="refused to load: the pickle needs pathlib.PurePosixPath"):
        load_backbone(path)


def test_corrupt_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "broken.pth.tar"
    path.write_bytes(b"not a zip archive at all")
    with pytest.raises(WeightsError, match="broken.pth.tar: not a readable checkpoint"):
        load_backbone(path)


def test_missing_backbone_key_is_an_error(tmp_path):
    folder = _copy_hf(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["radio_model.model.blocks.1.mlp.fc2.weight"]
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"missing 1 key.*blocks\.1\.mlp\.fc2\.weight"):
        load_backbone(folder)


def test_unexpected_backbone_key_is_an_error(tmp_path):
    folder = _copy_hf(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    weights["radio_model.model.blocks.0.attn.extra_bias"] = torch.zeros(3)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="unexpected 1 key"):
        load_backbone(folder)


def test_shape_mismatch_names_the_key(tmp_path):
    folder = _copy_hf(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    weights["radio_model.model.blocks.0.norm1.weight"] = torch.ones(7)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="norm1.weight"):
        load_backbone(folder)


def test_grandma_layerscale_keys_are_accepted(tmp_path):
    folder = _copy_hf(tmp_path, "radio-tiny-v3")
    weights = load_file(str(folder / "model.safetensors"))
    renamed = {k.replace(".gamma", ".grandma"): v for k, v in weights.items()}
    assert renamed.keys() != weights.keys()
    save_file(renamed, str(folder / "model.safetensors"))
    model = load_backbone(folder)
    reference = load_backbone(radio_fixtures() / "radio-tiny-v3")
    torch.testing.assert_close(model.state_dict(), reference.state_dict())
    assert any(k.endswith("ls1.gamma") for k in model.load_report.converted)


def test_report_lists_ignored_keys():
    model = load_backbone(radio_fixtures() / "radio-tiny-v3" / "checkpoint.pth.tar")
    assert "model.reg_token" in model.load_report.ignored
    assert not model.load_report.missing and not model.load_report.unexpected
    unadapted = load_backbone(radio_fixtures() / "radio-tiny-v2")
    assert any(k.startswith("adaptors.siglip.") for k in unadapted.load_report.ignored)
    assert unadapted.adaptor_names == ()


def test_unknown_adaptor_lists_available_ones():
    with pytest.raises(WeightsError, match=r"'clip' is not in the checkpoint; it carries \['siglip'\]"):
        load_backbone(radio_fixtures() / "radio-tiny-v2" / "checkpoint.pth.tar", adaptors=["clip"])


def test_registry_id_without_cached_weights_names_repo_and_cache():
    with pytest.raises(WeightsError) as err:
        load_backbone("c-radio-v3-b")
    message = str(err.value)
    assert "nvidia/C-RADIOv3-B" in message and "hf-cache" in message


def test_hub_source_resolves_through_the_cache(tmp_path):
    from huggingface_hub import constants

    repo_dir = tmp_path / "hf-cache" / "models--nvidia--tiny-radio"
    snapshot = repo_dir / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(radio_fixtures() / "radio-tiny-v4", snapshot)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_CACHE = str(tmp_path / "hf-cache")
    assert str(tmp_path / "hf-cache") == constants.HF_HUB_CACHE
    from_hub = load_backbone("hf-hub:nvidia/tiny-radio")
    local = load_backbone(radio_fixtures() / "radio-tiny-v4")
    torch.testing.assert_close(from_hub.state_dict(), local.state_dict())
    hub_file = load_backbone("hf-hub:nvidia/tiny-radio/checkpoint.pth.tar")
    torch.testing.assert_close(hub_file.state_dict(), local.state_dict())


def test_folder_without_checkpoint_explains_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(WeightsError, match=r"config.json \+ model.safetensors"):
        load_backbone(tmp_path)


def test_config_without_args_is_rejected(tmp_path):
    folder = _copy_hf(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["args"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="'args'"):
        load_backbone(folder)


def test_unknown_name_suggests_close_ids():
    with pytest.raises(ModelNotFoundError, match="did you mean c-radio-v3-b"):
        load_backbone("c-radio-v3-bb")
    assert issubclass(ModelNotFoundError, VfmError)


def test_half_precision_checkpoint_is_upcast(tmp_path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        payload = torch.load(radio_fixtures() / "radio-tiny-v4" / "checkpoint.pth.tar", weights_only=True)
    payload["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    torch.save(payload, tmp_path / "half.pth.tar")
    model = load_backbone(tmp_path / "half.pth.tar")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    reference = load_backbone(radio_fixtures() / "radio-tiny-v4")
    images = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(images).summary, reference(images).summary, atol=0.05, rtol=0.01)


def _fake_hub_repo(cache, repo: str, files: dict) -> None:
    """A Hugging Face cache snapshot of ``repo`` holding ``files`` (name -> source path or tensor dict)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(snapshot.name)
    for name, content in files.items():
        if isinstance(content, dict):
            save_file(content, str(snapshot / name))
        else:
            shutil.copy(content, snapshot / name)


def _use_cache(monkeypatch, cache) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def test_registry_id_loads_its_published_source(tmp_path, monkeypatch):
    fixture = radio_fixtures() / "radio-tiny-v3"
    _fake_hub_repo(
        tmp_path,
        "nvidia/C-RADIOv3-B",
        {
            "config.json": fixture / "config.json",
            "model.safetensors": fixture / "model.safetensors",
        },
    )
    _use_cache(monkeypatch, tmp_path)
    model = load_backbone("c_radio_v3_vit_base_patch16_reg4_dinov2")  # a TAO alias of c-radio-v3-b
    reference = load_backbone(fixture)
    torch.testing.assert_close(model.state_dict(), reference.state_dict())
    assert model.model_id == "c_radio_v3_vit_base_patch16_reg4_dinov2"


def test_adaptors_fall_back_to_the_torchhub_file(tmp_path, monkeypatch):
    fixture = radio_fixtures() / "radio-tiny-v2"
    without_adaptors = {k: v for k, v in load_file(str(fixture / "model.safetensors")).items() if "adaptors" not in k}
    _fake_hub_repo(
        tmp_path,
        "nvidia/C-RADIOv2-g",
        {
            "config.json": fixture / "config.json",
            "model.safetensors": without_adaptors,
            "c-radio_v2-g_half.pth.tar": fixture / "checkpoint.pth.tar",
        },
    )
    _use_cache(monkeypatch, tmp_path)
    assert not load_backbone("c-radio-v2-g").adaptor_names
    model = load_backbone("c-radio-v2-g", adaptors=["siglip"])
    assert model.adaptor_names == ("siglip",)
    assert model.load_report.source.endswith("c-radio_v2-g_half.pth.tar")


def test_registry_checkpoint_option_overrides_the_source():
    model = load_backbone("c-radio-v4-h", checkpoint=radio_fixtures() / "radio-tiny-v4" / "checkpoint.pth.tar")
    assert model.cfg.num_cls_tokens == 3 and model.embed_dim == 192


def test_dinov2_student_layout_round_trip(tmp_path):
    """RADIOv2.5-g style checkpoints: ViT under ``base_model.inner.``, SwiGLU ``w12``/``w3``, embedder bias, final
    norm, one cls token; saved from the tiny variant in that layout and loaded back to the same outputs."""
    source = load_backbone("test-radio-v2.5g-tiny")
    state = {}
    for key, value in source.state_dict().items():
        if key.startswith("model."):
            key = "base_model.inner." + key.removeprefix("model.")
            key = key.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3.")
        state[key] = value.half()  # published *_half files
    args = argparse.Namespace(
        model="dinov2_student_tiny",
        model_kwargs={"num_heads": 2},
        cls_token_per_teacher=False,
        cpe_num_registers=4,
        teachers=[{"name": "clip"}, {"name": "siglip"}, {"name": "dino_v2"}],
        model_norm=True,
    )
    torch.save({"args": args, "state_dict": state}, tmp_path / "radio_v2.5-g.pth.tar")
    loaded = load_backbone(tmp_path / "radio_v2.5-g.pth.tar")
    assert loaded.cfg.ffn == "swiglu" and loaded.cfg.patch_size == 14 and loaded.cfg.num_cls_tokens == 1
    assert loaded.cfg.embedder_bias and loaded.cfg.model_norm and loaded.summary_dim == 64
    images = torch.rand(2, 3, 56, 84)
    reference = source.half().float()  # the same rounding as the half checkpoint
    with torch.inference_mode():
        torch.testing.assert_close(loaded(images).features, reference(images).features, atol=1e-5, rtol=0)
