"""Backbone ONNX export: every family's tiny model at two resolutions, parity with PyTorch on real images, dynamic
H/W for RADIO, metadata, int8 cosine, and the output mapping back to BackboneOutput."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vfmkit import __version__, load_backbone
from vfmkit.export.backbone import (
    BackboneGraph,
    export_backbone,
    output_names,
    reference_images,
    supports_dynamic_resolution,
    to_backbone_output,
)
from vfmkit.export.onnx import ExportError
from vfmkit.export.quantize import fp32_nodes, quantize_int8
from vfmkit.export.runtime import OnnxModel
from vfmkit.export.verify import cosine_stats, torch_outputs
from vfmkit.weights.fingerprint import weights_fingerprint

MODELS = [
    ("test-radio-v2-tiny", ()),
    ("test-radio-v2-tiny", ("siglip",)),
    ("test-radio-v3-tiny", ()),
    ("test-radio-v4-tiny", ()),
    ("test-radio-v2.5g-tiny", ()),
    ("test-dinov2-tiny", ()),
    ("test-clip-tiny", ()),
    ("test-siglip-tiny", ()),
    ("test-openclip-tiny", ()),
]
CASES = [
    pytest.param(name, adaptors, steps, id=f"{name}{'+' if adaptors else ''}{''.join(adaptors)}-{steps or 'preferred'}")
    for name, adaptors in MODELS
    # RADIO graphs have dynamic H/W and export_backbone verifies them at a second size itself
    for steps in ([None] if name.startswith("test-radio") else [None, 3])
]


def _backbone(name: str, adaptors: tuple[str, ...] = ()):
    torch.manual_seed(0)
    return load_backbone(name, adaptors=list(adaptors) or None).eval()


@pytest.fixture(scope="module")
def radio(tmp_path_factory):
    """test-radio-v2-tiny with its siglip adaptor, exported with dynamic H/W at 64x64 (module-wide)."""
    backbone = _backbone("test-radio-v2-tiny", ("siglip",))
    path = tmp_path_factory.mktemp("radio") / "radio.onnx"
    result = export_backbone(backbone, path, model_id="test-radio-v2-tiny", verify_images=reference_images(backbone))
    return backbone, result


@pytest.mark.parametrize(("name", "adaptors", "steps"), CASES)
def test_every_family_exports_and_matches_pytorch(name, adaptors, steps, tmp_path: Path) -> None:
    """Two resolutions per model: the preferred one and 3 patches (fixed graphs), or two sizes of one dynamic graph."""
    backbone = _backbone(name, adaptors)
    resolution = None if steps is None else steps * backbone.patch_size
    images = reference_images(backbone, resolution)
    result = export_backbone(backbone, tmp_path / "m.onnx", resolution, model_id=name, verify_images=images)
    assert result.dynamic == name.startswith("test-radio")
    assert len(result.verified) == (2 if result.dynamic else 1)
    assert all(check.max_abs_diff <= 1e-4 for check in result.verified)
    model = OnnxModel(result.path)
    assert model.input_names == ["image"] and model.output_names == output_names(adaptors)
    expected_shape = ["batch", 3, "height", "width"] if result.dynamic else ["batch", 3, *images.shape[-2:]]
    assert model.input_shapes["image"] == expected_shape
    outputs = model(images)
    assert outputs["summary"].shape == (len(images), backbone.summary_dim)
    assert outputs["features"].shape[1:] == ((images.shape[-2] // backbone.patch_size) ** 2, backbone.embed_dim)
    if steps is None:  # int8 of the same graph: cosine of the summary to PyTorch fp32
        int8 = quantize_int8(result.path, tmp_path / "m8.onnx")
        reference = torch_outputs(BackboneGraph(backbone), (images,), len(model.output_names))
        assert cosine_stats(OnnxModel(int8)(images)["summary"], reference[0]).min >= 0.99


def test_metadata_describes_the_graph(radio) -> None:
    backbone, result = radio
    metadata = OnnxModel(result.path).metadata
    assert metadata["model"] == "test-radio-v2-tiny"
    assert metadata["weights_sha256"] == weights_fingerprint(backbone)
    assert metadata["resolution"] == "64x64" and metadata["resolution_policy"] == "dynamic"
    assert "multiples of 16" in metadata["resolution_rule"]
    assert metadata["mean"] == list(backbone.preprocessing.mean) and metadata["std"] == list(backbone.preprocessing.std)
    assert metadata["patch_size"] == 16 and metadata["adaptors"] == ["siglip"]
    assert metadata["precision"] == "fp32" and metadata["vfmkit_version"] == __version__
    assert list(metadata["outputs"]) == output_names(("siglip",))


@pytest.mark.parametrize("size", [(32, 48), (96, 64), (272, 272)])
def test_radio_graph_takes_any_multiple_of_the_patch_size(radio, size) -> None:
    """One file, sizes never traced: non-square both ways and beyond the CPE grid (256 px)."""
    backbone, result = radio
    images = torch.nn.functional.interpolate(reference_images(backbone)[:2], size=size, mode="bilinear")
    actual = OnnxModel(result.path)(images)
    expected = torch_outputs(BackboneGraph(backbone), (images,), 4)
    for (name, value), reference in zip(actual.items(), expected, strict=True):
        np.testing.assert_allclose(value, reference, atol=1e-4, err_msg=name)


def test_outputs_map_back_to_a_backbone_output(radio) -> None:
    backbone, result = radio
    images = reference_images(backbone, (48, 32))
    output = to_backbone_output(OnnxModel(result.path)(images), (48, 32), backbone.patch_size)
    with torch.inference_mode():
        expected = backbone(images)
    assert output.grid == expected.grid == (3, 2)
    torch.testing.assert_close(output.spatial(), expected.spatial(), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        output.adaptors["siglip"].summary, expected.adaptors["siglip"].summary, atol=1e-4, rtol=0
    )
    assert output.adaptors["siglip"].grid == expected.adaptors["siglip"].grid


def test_int8_keeps_the_patch_embedding_in_fp32(radio, tmp_path: Path) -> None:
    _, result = radio
    int8 = quantize_int8(result.path, tmp_path / "int8.onnx")
    graph = onnx.load(str(int8))
    kept = fp32_nodes(onnx.load(str(result.path)))
    assert kept and all("patch_generator" in name for name in kept)
    float_matmuls = {n.name for n in graph.graph.node if n.op_type == "MatMul"}
    assert set(kept) <= float_matmuls
    assert any(n.op_type == "MatMulInteger" for n in graph.graph.node)
    metadata = OnnxModel(int8).metadata
    assert metadata["precision"].startswith("int8") and metadata["model"] == "test-radio-v2-tiny"


def test_fixed_resolution_models_refuse_dynamic_height_and_width(tmp_path: Path) -> None:
    backbone = _backbone("test-dinov2-tiny")
    assert not supports_dynamic_resolution(backbone)
    with pytest.raises(ExportError, match=r"cannot be exported with dynamic H/W: fixed: 64x64 only"):
        export_backbone(backbone, tmp_path / "d.onnx", dynamic_resolution=True)
    assert not (tmp_path / "d.onnx").exists()


def test_non_native_resolution_leaves_the_original_model_untouched(tmp_path: Path) -> None:
    backbone = _backbone("test-openclip-tiny")
    table = backbone.tower.positional_embedding.detach().clone()
    export_backbone(backbone, tmp_path / "c.onnx", 32, verify_images=reference_images(backbone, 32))
    assert torch.equal(backbone.tower.positional_embedding, table)
    assert json.loads(onnx.load(str(tmp_path / "c.onnx")).metadata_props[0].value) is not None
