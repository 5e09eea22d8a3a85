"""ONNX export: checked graph, embedded metadata, atomic writes, onnxruntime parity with PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import vfmkit.export.onnx as onnx_export
from vfmkit import __version__, load_backbone, preprocess_images
from vfmkit.errors import VfmError
from vfmkit.export.onnx import ExportError, export_onnx
from vfmkit.export.runtime import OnnxModel
from vfmkit.export.verify import verify_onnx

LABELS = ["circle", "square", "stripes", "noise", "flat"]


class Classifier(nn.Module):
    """Backbone + linear head on the summary: images (B, 3, H, W) in [0, 1] -> (logits, probs), each (B, classes)."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.summary_dim, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.backbone(images).summary)
        return logits, logits.softmax(dim=-1)


class Summary(nn.Module):
    """A backbone's summary only: images (B, 3, H, W) in [0, 1] -> (B, C)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images).summary


class DiffersInOnnx(nn.Module):
    """Adds 1e-3 to its output only while being exported: a stand-in for an export that changes the numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out + 1e-3 if torch.onnx.is_in_onnx_export() else out


class DataDependent(nn.Module):
    """Python control flow on a tensor value: torch.export refuses it, the TorchScript tracer records one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x - 1


class GroupedQueryAttention(nn.Module):
    """SDPA with grouped KV heads: q (B, 4, N, D), kv (B, 2, N, D) -> (B, 4, N, D); no TorchScript-ONNX symbolic."""

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)


class Pair(nn.Module):
    """Two inputs (B, 4) -> difference features (B, 4) and a distance (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = self.linear(a) - self.linear(b)
        return diff, diff.norm(dim=-1)


class Broken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward is broken on purpose")


class BreaksWhileExporting(nn.Module):
    """Runs eagerly, raises inside both exporters (tracing: TorchScript; compiling: every torch.export strategy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            raise RuntimeError("unsupported during export")
        return x + 1


def _metadata(model: Classifier) -> dict[str, str]:
    pre = model.backbone.preprocessing
    return {
        "task": "classify",
        "labels": json.dumps(LABELS),
        "mean": json.dumps(list(pre.mean)),
        "std": json.dumps(list(pre.std)),
        "resolution": json.dumps([64, 64]),
        "input_range": "float32 RGB in [0, 1], NCHW",
    }


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    torch.manual_seed(0)
    model = Classifier(load_backbone("test-radio-v2-tiny"), len(LABELS)).eval()
    with torch.inference_mode():  # fills the RADIO position-embedding cache, which export must not capture
        model(torch.rand(1, 3, 64, 64))
    return model


@pytest.fixture(scope="module")
def exported(classifier: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "classifier.onnx"
    example = torch.rand(2, 3, 64, 64)
    return export_onnx(classifier, (example,), path, ["input"], ["logits", "probs"], _metadata(classifier))


def _png_images(folder: Path) -> list[Path]:
    """Five visually distinct PNGs of different sizes and modes, decoded later by vfmkit.preprocess_images."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:90, 0:120]
    arrays = [
        ((xx - 60) ** 2 + (yy - 45) ** 2 < 900)[..., None] * np.array([250, 30, 30]),
        ((abs(xx - 60) < 30) & (abs(yy - 45) < 30))[..., None] * np.array([20, 200, 40]),
        ((xx // 8) % 2)[..., None] * np.array([255, 255, 255]),
        rng.integers(0, 256, (90, 120, 3)),
        np.full((90, 120, 3), [40, 90, 200]),
    ]
    paths = []
    for index, array in enumerate(arrays):
        image = Image.fromarray(array.astype(np.uint8))
        image = image.convert("L") if index == 4 else image.resize((120 - 10 * index, 90))
        paths.append(folder / f"image{index}.png")
        image.save(paths[-1])
    return paths


def test_exported_graph_is_standard_opset17_with_dynamic_batch(exported: Path) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    assert {(o.domain or "ai.onnx"): o.version for o in model.opset_import}["ai.onnx"] == 17
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 64, 64]
    assert not list(exported.parent.glob(".classifier.onnx.*")), "temporary export folder left behind"


def test_verify_on_random_images(exported: Path, classifier: Classifier) -> None:
    torch.manual_seed(1)
    result = verify_onnx(exported, classifier, (torch.rand(3, 3, 64, 64),))
    assert result.batch_sizes == (1, 3)
    assert result.provider == "CPUExecutionProvider"
    assert set(result.per_output) == {"logits", "probs"}
    assert 0 < result.max_abs_diff <= 1e-4
    assert result.max_abs_diff == max(result.per_output.values())
    assert "max abs diff" in str(result) and json.dumps(result.as_dict())


def test_verify_on_preprocessed_png_files(exported: Path, classifier: Classifier, tmp_path: Path) -> None:
    images = preprocess_images(_png_images(tmp_path), classifier.backbone, resolution=64)
    assert images.shape == (5, 3, 64, 64) and images.min() >= 0.0 and images.max() <= 1.0
    result = verify_onnx(exported, classifier, (images,))
    assert result.batch_sizes == (1, 5)
    assert result.max_abs_diff <= 1e-4


def test_onnx_model_metadata_names_and_batches(exported: Path, classifier: Classifier) -> None:
    model = OnnxModel(exported)
    assert model.input_names == ["input"] and model.output_names == ["logits", "probs"]
    assert model.input_size == (64, 64)
    assert model.metadata["labels"] == LABELS
    assert model.metadata["mean"] == pytest.approx(list(classifier.backbone.preprocessing.mean))
    assert model.metadata["resolution"] == [64, 64]
    assert model.metadata["task"] == "classify"
    assert model.metadata["input_range"] == "float32 RGB in [0, 1], NCHW"
    assert model.metadata["vfmkit_version"] == __version__
    assert model.metadata["vfmkit_exporter"] in ("dynamo", "torchscript")
    images = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        logits, _ = classifier(images)
    for batch in (1, 3):
        out = model(images[:batch].numpy())
        assert out["logits"].shape == (batch, len(LABELS)) and out["probs"].shape == (batch, len(LABELS))
        np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(out["logits"], logits[:batch].numpy(), atol=1e-4)
    out64 = model(images[:2].double())  # torch tensor, float64: converted
    np.testing.assert_allclose(out64["logits"], logits[:2].numpy(), atol=1e-4)


def test_onnx_model_rejects_wrong_inputs(exported: Path) -> None:
    model = OnnxModel(exported)
    with pytest.raises(ExportError, match=r"input 'input' .* must be batch x 3 x 64 x 64, got \(1, 3, 32, 32\)"):
        model(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ExportError, match="takes 1 inputs"):
        model(np.zeros((1, 3, 64, 64), np.float32), np.zeros((1, 3, 64, 64), np.float32))


def test_dynamo_exporter_gives_the_same_parity_at_opset_17(classifier: Classifier, tmp_path: Path) -> None:
    path = export_onnx(
        classifier, (torch.rand(1, 3, 64, 64),), tmp_path / "d.onnx", ["input"], ["logits", "probs"], {},
        exporter="dynamo",
    )  # fmt: skip
    assert OnnxModel(path).metadata["vfmkit_exporter"] == "dynamo"
    assert [(o.domain, o.version) for o in onnx.load(str(path)).opset_import] == [("", 17)]
    assert verify_onnx(path, classifier, (torch.rand(3, 3, 64, 64),)).max_abs_diff <= 1e-4


@pytest.mark.parametrize("exporter", ["auto", "dynamo"])
@pytest.mark.parametrize("name", ["test-dinov2-tiny", "test-clip-tiny"])
def test_backbone_summary_export_matches(name: str, exporter: str, tmp_path: Path) -> None:
    model = Summary(load_backbone(name)).eval()
    size = model.backbone.preprocessing.preferred_resolution
    example = (torch.rand(2, 3, *size),)
    path = export_onnx(model, example, tmp_path / f"{name}.onnx", ["input"], ["summary"], {}, exporter=exporter)
    images = preprocess_images(_png_images(tmp_path)[:3], model.backbone)
    result = verify_onnx(path, model, (images,))
    assert result.per_output["summary"] <= 1e-4
    used = "torchscript" if exporter == "auto" else exporter  # opset 17: the native exporter, no silent fallback
    assert OnnxModel(path).metadata["vfmkit_exporter"] == used
    assert [(o.domain, o.version) for o in onnx.load(str(path)).opset_import] == [("", 17)]
    assert OnnxModel(path)(images.numpy())["summary"].shape == (3, model.backbone.summary_dim)


def test_export_that_changes_the_numbers_fails_verification(tmp_path: Path) -> None:
    model = DiffersInOnnx().eval()
    path = export_onnx(model, (torch.rand(2, 8),), tmp_path / "differs.onnx", ["x"], ["y"], {})
    with pytest.raises(ExportError, match=r"tolerance 0\.0001: 'y' differs by 0\.001 \(batch size [14]\)"):
        verify_onnx(path, model, (torch.rand(4, 8),))
    loose = verify_onnx(path, model, (torch.rand(4, 8),), tolerance=1e-2)
    assert loose.per_output["y"] == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("opset", [17, 18])
def test_two_inputs_share_the_dynamic_batch(opset: int, tmp_path: Path) -> None:
    model = Pair().eval()
    example = (torch.rand(2, 4), torch.rand(2, 4))
    path = export_onnx(model, example, tmp_path / "pair.onnx", ["a", "b"], ["d", "n"], {}, opset=opset)
    assert OnnxModel(path).metadata["vfmkit_exporter"] == ("torchscript" if opset == 17 else "dynamo")
    result = verify_onnx(path, model, (torch.rand(5, 4), torch.rand(5, 4)))
    assert result.batch_sizes == (1, 5) and result.max_abs_diff <= 1e-5
    assert OnnxModel(path)(np.ones((2, 4)), np.zeros((2, 4)))["n"].shape == (2,)


def test_static_batch_export_fails_the_second_batch_size(tmp_path: Path) -> None:
    model = DiffersInOnnx().eval()
    path = export_onnx(model, (torch.rand(2, 8),), tmp_path / "s.onnx", ["x"], ["y"], {}, dynamic_batch=False)
    assert OnnxModel(path).input_shapes == {"x": [2, 8]}
    with pytest.raises(ExportError, match=r"input 'x' .* must be 2 x 8, got \(1, 8\)"):
        verify_onnx(path, model, (torch.rand(2, 8),), tolerance=1.0)


def test_opset_17_falls_back_to_torch_export_when_torchscript_refuses(tmp_path: Path) -> None:
    model = GroupedQueryAttention().eval()
    example = (torch.rand(2, 4, 5, 8), torch.rand(2, 2, 5, 8))
    with pytest.raises(ExportError, match="torchscript exporter: .*enable_gqa"):
        export_onnx(model, example, tmp_path / "gqa.onnx", ["q", "kv"], ["y"], {}, exporter="torchscript")
    path = export_onnx(model, example, tmp_path / "gqa.onnx", ["q", "kv"], ["y"], {})
    assert OnnxModel(path).metadata["vfmkit_exporter"] == "dynamo"
    assert [(o.domain, o.version) for o in onnx.load(str(path)).opset_import] == [("", 17)]
    assert verify_onnx(path, model, (torch.rand(3, 4, 5, 8), torch.rand(3, 2, 5, 8))).max_abs_diff <= 1e-5


def test_opset_18_falls_back_to_torchscript_when_torch_export_refuses(tmp_path: Path) -> None:
    model = DataDependent().eval()
    example = (torch.rand(2, 3),)
    with pytest.raises(ExportError, match="dynamo exporter: .*data-dependent"):
        export_onnx(model, example, tmp_path / "dd.onnx", ["x"], ["y"], {}, opset=18, exporter="dynamo")
    assert not (tmp_path / "dd.onnx").exists()
    path = export_onnx(model, example, tmp_path / "dd.onnx", ["x"], ["y"], {}, opset=18)
    assert OnnxModel(path).metadata["vfmkit_exporter"] == "torchscript"
    assert verify_onnx(path, model, (torch.rand(3, 3),)).max_abs_diff == 0.0


def test_failing_forward_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match="forward failed .*RuntimeError: forward is broken on purpose"):
        export_onnx(Broken(), (torch.rand(1, 3),), target, ["x"], ["y"], {})
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"previous export")
    with pytest.raises(ExportError):
        export_onnx(Broken(), (torch.rand(1, 3),), target, ["x"], ["y"], {})
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["broken.onnx"]


def test_both_exporters_failing_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "exp.onnx"
    with pytest.raises(
        ExportError, match="torchscript exporter: RuntimeError: unsupported.*; dynamo exporter: RuntimeError: unsupp"
    ):
        export_onnx(BreaksWhileExporting(), (torch.rand(2, 3),), target, ["x"], ["y"], {})
    assert list(tmp_path.iterdir()) == []


def test_a_checker_failure_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def reject(model, *args, **kwargs):
        raise onnx.checker.ValidationError("Field 'shape' of 'type' is required but missing.")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(ExportError, match="fails onnx.checker: Field 'shape'"):
        export_onnx(DiffersInOnnx().eval(), (torch.rand(2, 8),), tmp_path / "bad.onnx", ["x"], ["y"], {})
    assert list(tmp_path.iterdir()) == []


def test_large_models_keep_weights_beside_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU()).eval()
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 0)
    path = export_onnx(model, (torch.rand(2, 32),), tmp_path / "big.onnx", ["x"], ["y"], {"task": "t"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert (tmp_path / "big.onnx.data").stat().st_size >= 32 * 64 * 4
    assert OnnxModel(path).metadata["task"] == "t"
    assert verify_onnx(path, model, (torch.rand(3, 32),)).max_abs_diff <= 1e-5
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 10**12)
    export_onnx(model, (torch.rand(2, 32),), path, ["x"], ["y"], {})
    assert [p.name for p in tmp_path.iterdir()] == ["big.onnx"]
    assert verify_onnx(path, model, (torch.rand(3, 32),)).max_abs_diff <= 1e-5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opset": 16}, "opset must be >= 17, got 16"),
        ({"metadata": {"labels": ["a", "b"]}}, "metadata 'labels' is a list: .*json.dumps"),
        ({"metadata": {"vfmkit_version": "9"}}, "'vfmkit_version' is set by vfmkit"),
        ({"output_names": ["y", "z"]}, "returns 1 tensors but 2 output names"),
        ({"input_names": ["x", "x2"]}, "1 example inputs but 2 input names"),
        ({"output_names": ["x"]}, "distinct non-empty strings"),
        ({"exporter": "tensorrt"}, "exporter must be one of"),
    ],
)
def test_bad_arguments_are_refused_without_writing(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"input_names": ["x"], "output_names": ["y"], "metadata": {}, **kwargs}
    with pytest.raises(ExportError, match=message):
        export_onnx(DiffersInOnnx().eval(), (torch.rand(2, 8),), tmp_path / "m.onnx", **args)
    assert list(tmp_path.iterdir()) == []


def test_missing_and_corrupt_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"ONNX model not found: .*missing\.onnx"):
        OnnxModel(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf model")
    with pytest.raises(ExportError, match=r"cannot load ONNX model .*corrupt\.onnx"):
        OnnxModel(corrupt)
    assert issubclass(ExportError, VfmError)


def test_export_restores_train_mode(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.train()
    model[1].eval()
    export_onnx(model, (torch.rand(2, 4),), tmp_path / "seq.onnx", ["x"], ["y"], {}, exporter="torchscript")
    assert model.training and model[0].training and not model[1].training
    assert verify_onnx(tmp_path / "seq.onnx", model, (torch.rand(3, 4),)).max_abs_diff <= 1e-6
