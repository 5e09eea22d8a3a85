"""Dense necks over every backbone family: the token-level backbone API, shapes, frozen training, summary fusion,
the adapter's stage features, refusals, and ONNX export of the ViT-Adapter with a tiny RADIO."""

from __future__ import annotations

import math

import onnx
import onnxruntime as ort
import pytest
import timm
import torch

from vfmkit.errors import ConfigurationError
from vfmkit.models.backbones.base import Preprocessing
from vfmkit.models.backbones.timm_family import TimmBackbone
from vfmkit.models.factory import load_backbone
from vfmkit.models.necks import NeckOutput, build_neck
from vfmkit.models.necks.simple_pyramid import backbone_pass

TINY = [
    "test-radio-v2-tiny",
    "test-radio-v3-tiny",
    "test-radio-v4-tiny",
    "test-dinov2-tiny",
    "test-clip-tiny",
    "test-siglip-tiny",
    "test-openclip-tiny",
    "test-nvclip-tiny",
]
KINDS = ["vit_adapter", "simple_pyramid"]


def _patch14_dinov2() -> TimmBackbone:
    """A tiny DINOv2-style timm ViT with patch 14 and 4 registers."""
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_small_patch14_reg4_dinov2",
        pretrained=False,
        num_classes=0,
        img_size=56,
        patch_size=14,
        embed_dim=64,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        dynamic_img_size=True,
    )
    prep = Preprocessing(
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        patch_size=14,
        preferred_resolution=(56, 56),
        max_resolution=224,
        resolution_step=14,
    )
    return TimmBackbone(model, prep).eval()


@pytest.fixture(scope="module")
def backbones() -> dict:
    torch.manual_seed(0)
    out = {name: load_backbone(name, pretrained=False) for name in TINY}
    out["dinov2-patch14"] = _patch14_dinov2()
    return out


def _sizes(name: str) -> list[tuple[int, int]]:
    """A multiple of 32 and a multiple of the patch (not of 32) per backbone."""
    if name == "dinov2-patch14":
        return [(224, 224), (112, 98)]
    return [(64, 64), (80, 48)] if "radio" in name else [(64, 96), (72, 40)]


@pytest.mark.parametrize("name", TINY)
def test_token_api_equals_forward(backbones, name: str) -> None:
    backbone = backbones[name]
    images = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        ref = backbone(images)
        tokens, grid = backbone.embed_tokens(images)
        assert tokens.shape == (2, backbone.num_prefix_tokens + grid[0] * grid[1], backbone.embed_dim)
        for block in backbone.token_blocks():
            tokens = block(tokens)
        out = backbone.finish_tokens(tokens, grid)
    assert out.grid == ref.grid
    assert torch.equal(out.summary, ref.summary) and torch.equal(out.features, ref.features)


@pytest.mark.parametrize("name", [*TINY, "dinov2-patch14"])
@pytest.mark.parametrize("kind", KINDS)
def test_pyramid_shapes(backbones, name: str, kind: str) -> None:
    backbone = backbones[name]
    options = {"conv_inplane": 16} if kind == "vit_adapter" else {"out_channels": 32}
    neck = build_neck(kind, backbone, **options).eval()
    assert neck.out_channels == (backbone.embed_dim if kind == "vit_adapter" else 32)
    for height, width in _sizes(name):
        with torch.no_grad():
            out = neck(torch.rand(2, 3, height, width))
        assert isinstance(out, NeckOutput) and out.summary.shape == (2, backbone.summary_dim)
        expected = [(2, neck.out_channels, math.ceil(height / s), math.ceil(width / s)) for s in (4, 8, 16, 32)]
        assert [tuple(f.shape) for f in out.features] == expected
        assert all(torch.isfinite(f).all() for f in out.features)


@pytest.mark.parametrize("name", ["test-radio-v2-tiny", "test-dinov2-tiny", "test-openclip-tiny"])
def test_backbone_pass_matches_forward_and_intermediates(backbones, name: str) -> None:
    backbone = backbones[name]
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = backbone_pass(backbone, images, [0, -1])
        ref_maps = backbone.forward_intermediates(images, indices=[0, -1])
        torch.testing.assert_close(final.summary, backbone(images).summary, atol=1e-6, rtol=0)
    assert len(maps) == 2
    for got, ref in zip(maps, ref_maps, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_adapter_carries_prefix_tokens_and_adds_stage_features() -> None:
    """With injection off (gamma 0) the summary is the backbone's; ViT features land on the matching level."""
    backbone = load_backbone("test-dinov2-tiny", pretrained=False)
    for block in backbone.model.blocks:  # LayerScale 1e-5 would make every block output nearly the same
        block.ls1.gamma.data.fill_(1.0)
        block.ls2.gamma.data.fill_(1.0)
    stages = [[0, 0], [1, 1], [2, 2]]
    with_vit = build_neck("vit_adapter", backbone, conv_inplane=16, init_values=0.0, interaction_indexes=stages).eval()
    without = build_neck(
        "vit_adapter", backbone, conv_inplane=16, init_values=0.0, interaction_indexes=stages, add_vit_features=False
    ).eval()
    without.load_state_dict(with_vit.state_dict())
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = with_vit(images), without(images)
        block1 = backbone.forward_intermediates(images, indices=[1])[0]  # stage 1 -> stride-16 level of 3 stages
        torch.testing.assert_close(a.summary, backbone(images).summary, atol=1e-6, rtol=0)
    bn = with_vit.norm3  # eval BatchNorm at init: x / sqrt(1 + eps)
    expected = torch.nn.functional.interpolate(block1, size=(4, 4), mode="bilinear") / math.sqrt(1 + bn.eps)
    torch.testing.assert_close(a.features[2] - b.features[2], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_frozen_backbone_trains_neck_only(backbones, kind: str) -> None:
    backbone = load_backbone("test-radio-v2-tiny", pretrained=False)
    neck = build_neck(kind, backbone, freeze_backbone=True, out_channels=32).train()
    assert not backbone.training and neck.training
    out = neck(torch.rand(2, 3, 64, 64))
    sum(f.square().mean() for f in out.features).backward()
    assert all(p.grad is None for p in backbone.parameters())
    named = {n: p for n, p in neck.named_parameters() if not n.startswith("backbone.")}
    assert named and all(p.grad is not None for p in named.values())
    if kind == "vit_adapter":  # the first injector reaches the outputs only through the frozen blocks
        for key in (
            "interactions.0.injector.gamma",
            "interactions.0.injector.attn.sampling_offsets.weight",
            "interactions.0.injector.attn.value_proj.weight",
            "spm.stem.0.weight",
            "level_embed",
        ):
            assert named[key].grad.abs().sum() > 0, key


def test_full_fine_tuning_reaches_backbone(backbones) -> None:
    backbone = load_backbone("test-dinov2-tiny", pretrained=False)
    neck = build_neck("vit_adapter", backbone, conv_inplane=16).train()
    assert backbone.training
    sum(f.mean() for f in neck(torch.rand(2, 3, 64, 64)).features).backward()
    assert backbone.model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_summary_fusion_adds_projected_summary(backbones, kind: str) -> None:
    backbone = backbones["test-radio-v3-tiny"]
    options = {"conv_inplane": 16} if kind == "vit_adapter" else {"out_channels": 32}
    fused = build_neck(kind, backbone, summary_fusion=True, **options).eval()
    plain = build_neck(kind, backbone, **options).eval()
    plain.load_state_dict(fused.state_dict(), strict=False)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = fused(images), plain(images)
        for level, (fa, fb) in enumerate(zip(a.features, b.features, strict=True)):
            added = fused.summary_fusion.proj[level](a.summary)[:, :, None, None]
            assert added.abs().max() > 1e-3
            torch.testing.assert_close(fa - fb, added.expand_as(fa), atol=1e-5, rtol=1e-5)


def test_out_channels_and_intermediate_mix(backbones) -> None:
    backbone = backbones["test-clip-tiny"]
    adapter = build_neck("vit_adapter", backbone, conv_inplane=16, out_channels=24, norm="gn").eval()
    pyramid = build_neck("simple_pyramid", backbone, out_channels=24, indices=[0, 1], norm="bn").eval()
    with torch.no_grad():
        for neck in (adapter, pyramid):
            assert [f.shape[1] for f in neck(torch.rand(1, 3, 64, 64)).features] == [24] * 4
    assert pyramid.layer_weights.shape == (2,)


def test_refusals(backbones) -> None:
    vitdet = load_backbone("test-radio-v2-tiny", pretrained=False, vitdet_window_size=2)
    with pytest.raises(ConfigurationError, match="ViTDet"):
        build_neck("vit_adapter", vitdet)
    pyramid = build_neck("simple_pyramid", vitdet, indices=[0, 1], out_channels=16).eval()
    with torch.no_grad():
        assert pyramid(torch.rand(1, 3, 64, 128)).features[0].shape == (1, 16, 16, 32)
    with pytest.raises(ConfigurationError, match="interaction_indexes"):
        build_neck("vit_adapter", backbones["test-radio-v4-tiny"], interaction_indexes=[[0, 0], [2, 2]])
    with pytest.raises(ConfigurationError, match="unknown neck"):
        build_neck("fpn", vitdet)
    with pytest.raises(ConfigurationError, match="n_points"):
        build_neck("simple_pyramid", vitdet, n_points=4)
    with pytest.raises(ConfigurationError, match="unknown norm"):
        build_neck("simple_pyramid", vitdet, norm="in")


def test_eva_refused_by_adapter_but_pyramid_works() -> None:
    model = timm.create_model(
        "eva02_tiny_patch14_224",
        pretrained=False,
        num_classes=0,
        img_size=56,
        depth=2,
        embed_dim=64,
        num_heads=2,
        dynamic_img_size=True,
    )
    prep = Preprocessing(
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        patch_size=14,
        preferred_resolution=(56, 56),
        max_resolution=224,
        resolution_step=14,
    )
    eva = TimmBackbone(model, prep).eval()
    with pytest.raises(ConfigurationError, match="Eva"):
        build_neck("vit_adapter", eva)
    with torch.no_grad():
        out = build_neck("simple_pyramid", eva, indices=[0, 1]).eval()(torch.rand(1, 3, 56, 56))
    assert [tuple(f.shape[-2:]) for f in out.features] == [(14, 14), (7, 7), (4, 4), (2, 2)]


class _Flat(torch.nn.Module):
    def __init__(self, neck):
        super().__init__()
        self.neck = neck

    def forward(self, images):
        out = self.neck(images)
        return (*out.features, out.summary)


@pytest.mark.slow  # the segment contract case exports the default ViT-Adapter through the engine
def test_adapter_onnx_export_parity(tmp_path) -> None:
    torch.manual_seed(0)
    backbone = load_backbone("test-radio-v2-tiny", pretrained=False)
    model = _Flat(build_neck("vit_adapter", backbone, conv_inplane=16, summary_fusion=True)).eval()
    for interaction in model.neck.interactions:  # non-trivial sampling offsets and injection
        torch.nn.init.normal_(interaction.injector.attn.sampling_offsets.weight, std=0.05)
        torch.nn.init.constant_(interaction.injector.gamma, 0.5)
    images = torch.rand(1, 3, 64, 96)
    path = tmp_path / "adapter.onnx"
    torch.onnx.export(
        model,
        (images,),
        str(path),
        dynamo=True,
        opset_version=17,
        input_names=["images"],
        output_names=["p4", "p8", "p16", "p32", "summary"],
    )
    graph = onnx.load(str(path)).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    assert "GridSample" in {node.op_type for node in graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    for onnx_out, torch_out in zip(got, expected, strict=True):
        assert onnx_out.shape == tuple(torch_out.shape)
        assert float((torch.from_numpy(onnx_out) - torch_out).abs().max()) <= 1e-4
