"""Adaptor MLP kinds (v1, v2 with upsampling, attn) and feature normalizers, loaded from torch.hub-layout files."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from tests.conftest import radio_fixtures

from vfmkit import load_backbone


def _hub_payload():
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(radio_fixtures() / "radio-tiny-v4" / "checkpoint.pth.tar", weights_only=True)


def _save(tmp_path, payload, name="model.pth.tar"):
    path = tmp_path / name
    torch.save(payload, path)
    return path


def test_feature_normalizers_whiten_spatial_and_intermediate_features(tmp_path):
    payload = _hub_payload()
    dim = payload["state_dict"]["base_model.patch_generator.embedder.weight"].shape[0]
    torch.manual_seed(0)
    mean, tx = torch.randn(dim), torch.randn(dim, dim) / dim**0.5
    payload["state_dict"].update({"_feature_normalizer.mean": mean, "_feature_normalizer.tx": tx})
    means, rotation, alphas = torch.randn(3, dim), torch.randn(3, dim, dim) / dim**0.5, torch.tensor([1.0, 2.0, 0.5])
    payload["state_dict"].update(
        {
            "_intermediate_feature_normalizer.means": means,
            "_intermediate_feature_normalizer.rotation": rotation,
            "_intermediate_feature_normalizer.alphas": alphas,
        }
    )
    model = load_backbone(_save(tmp_path, payload))
    plain = load_backbone(radio_fixtures() / "radio-tiny-v4")
    images = torch.rand(2, 3, 48, 64)
    with torch.inference_mode():
        raw = plain(images)
        out = model(images)
        raw_maps = plain.forward_intermediates(images, indices=[1], output_fmt="NLC")
        maps = model.forward_intermediates(images, indices=[1], output_fmt="NLC")
    torch.testing.assert_close(out.summary, raw.summary)
    torch.testing.assert_close(out.features, (raw.features - mean) @ tx.T, atol=1e-5, rtol=1e-5)
    expected = alphas[1] * ((raw_maps[0] - means[1]) @ rotation[1].T)
    torch.testing.assert_close(maps[0], expected, atol=1e-5, rtol=1e-5)


def _v1_head(prefix: str, dims: tuple[int, int, int], inner: int) -> dict[str, torch.Tensor]:
    d_in, hidden, out = dims
    sd = {
        f"{prefix}fc1.weight": torch.randn(hidden, d_in) * 0.1,
        f"{prefix}fc1.bias": torch.randn(hidden),
        f"{prefix}norm.weight": torch.rand(hidden) + 0.5,
        f"{prefix}norm.bias": torch.randn(hidden),
        f"{prefix}fc2.weight": torch.randn(out, hidden) * 0.1,
        f"{prefix}fc2.bias": torch.randn(out),
    }
    for k in range(inner):
        sd.update(
            {
                f"{prefix}inner.{3 * k}.weight": torch.randn(hidden, hidden) * 0.1,
                f"{prefix}inner.{3 * k}.bias": torch.randn(hidden),
                f"{prefix}inner.{3 * k + 1}.weight": torch.rand(hidden) + 0.5,
                f"{prefix}inner.{3 * k + 1}.bias": torch.randn(hidden),
            }
        )
    return sd


def _run_v1(sd: dict[str, torch.Tensor], prefix: str, x: torch.Tensor, inner: int) -> torch.Tensor:
    def lin(name, t):
        return F.linear(t, sd[f"{prefix}{name}.weight"], sd[f"{prefix}{name}.bias"])

    def norm(name, t):
        return F.layer_norm(t, t.shape[-1:], sd[f"{prefix}{name}.weight"], sd[f"{prefix}{name}.bias"])

    x = F.relu(norm("norm", lin("fc1", x)))
    for k in range(inner):
        x = F.relu(norm(f"inner.{3 * k + 1}", lin(f"inner.{3 * k}", x)))
    return lin("fc2", x)


def test_mlp_v1_heads_with_upsampled_features(tmp_path):
    payload = _hub_payload()
    torch.manual_seed(1)
    dim = payload["state_dict"]["base_model.patch_generator.embedder.weight"].shape[0]
    head = _v1_head("_heads.1.", (dim, 32, 20), inner=1)
    feat = _v1_head("_feature_projections.1.", (dim, 32, 4 * 6), inner=0)  # 2x upsampling of 6 channels
    payload["state_dict"].update({**head, **feat})
    payload["args"].teachers[1]["fd_upsample_factor"] = 2
    model = load_backbone(_save(tmp_path, payload), adaptors=["dino_v3"])
    assert model.cfg.adaptors[0].summary_mlp == ("v1", dim, 32, 20, 1)
    images = torch.rand(1, 3, 32, 48)
    with torch.inference_mode():
        tokens, _ = model.model.forward_tokens(model.input_conditioner(images))
        out = model(images)
    adaptor = out.adaptors["dino_v3"]
    torch.testing.assert_close(adaptor.summary, _run_v1(head, "_heads.1.", tokens[:, 1], 1), atol=1e-5, rtol=1e-5)
    assert adaptor.grid == (4, 6) and adaptor.features.shape == (1, 24, 6)
    flat = _run_v1(feat, "_feature_projections.1.", out.features, 0).reshape(1, 2, 3, 2, 2, 6)
    expected = flat.permute(0, 1, 3, 2, 4, 5).reshape(1, 24, 6)  # channels read as [u_row, u_col, C]
    torch.testing.assert_close(adaptor.features, expected, atol=1e-5, rtol=1e-5)


def test_attention_feature_head_is_detected_and_runs(tmp_path):
    from vfmkit.models.backbones.radio.adaptors import AttnFeatureHead

    payload = _hub_payload()
    dim = payload["state_dict"]["base_model.patch_generator.embedder.weight"].shape[0]
    reference = AttnFeatureHead(dim, 48, 16, num_heads=3)  # the backbone's head count
    for name, param in reference.named_parameters():
        if name.endswith("gamma"):
            param.data.fill_(1.0)  # make the attention blocks matter
    payload["state_dict"].update({f"_feature_projections.2.{k}": v for k, v in reference.state_dict().items()})
    model = load_backbone(_save(tmp_path, payload), adaptors=["sam3"])
    assert model.cfg.adaptors[0].feature_mlp[0] == "attn" and model.cfg.adaptors[0].summary_mlp is None
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 32, 32))
        expected = reference.eval()(out.features)
    torch.testing.assert_close(out.adaptors["sam3"].features, expected, atol=1e-5, rtol=1e-5)
