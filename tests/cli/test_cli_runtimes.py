"""`vfm embed --runtime`, `vfm models export` and their one-line errors."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.cli.test_cli import _assert_one_line_error, run_cli

from vfmkit.export.runtime import OnnxModel

MODEL = "test-radio-v2-tiny"
DEMO_VAL = Path(str(resources.files("vfmkit").joinpath("assets", "demo", "val")))


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory) -> None:
    monkeypatch.setenv("VFMKIT_CACHE", str(tmp_path_factory.getbasetemp() / "vfmkit-cache"))


def test_embed_with_onnxruntime_writes_the_eager_rows(capsys, tmp_path: Path) -> None:
    code, _, _ = run_cli(capsys, "embed", DEMO_VAL, "-m", MODEL, "-o", tmp_path / "eager.safetensors")
    assert code == 0
    code, out, err = run_cli(
        capsys, "embed", DEMO_VAL, "-m", MODEL, "-o", tmp_path / "ort.safetensors", "--runtime", "onnxruntime"
    )
    assert code == 0 and "embedded 16 images" in out
    assert "onnxruntime fp32" in err and "max abs diff to PyTorch on the first batch (16 images)" in err
    eager, ort = load_file(tmp_path / "eager.safetensors"), load_file(tmp_path / "ort.safetensors")
    torch.testing.assert_close(ort["summary"], eager["summary"], atol=1e-4, rtol=0)


def test_models_export_writes_a_verified_dynamic_graph(capsys, tmp_path: Path) -> None:
    out = tmp_path / "radio.onnx"
    code, stdout, _ = run_cli(capsys, "models", "export", MODEL, "--out", out, "--resolution", "48")
    assert code == 0
    assert "dynamic: any H and W that are multiples of 16 (exported and verified at 48x48)" in stdout
    assert stdout.count("max abs diff") == 2 and f"wrote {out}" in stdout
    model = OnnxModel(out)
    assert model.input_shapes["image"] == ["batch", 3, "height", "width"]
    assert model.metadata["model"] == MODEL and model.metadata["resolution"] == "48x48"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--format", "tensorrt", "--fp16"), ("TensorRT engines need the tensorrt package", "pip install tensorrt")),
        (("--fp16",), ("--fp16 applies to --format tensorrt",)),
        (("--format", "tensorrt", "--int8"), ("needs --calibration DIR",)),
        (("--resolution", "50"), ("not a positive multiple", "16")),
    ],
)
def test_models_export_errors_are_one_line(capsys, tmp_path: Path, args, fragments) -> None:
    if "tensorrt" in args and "--fp16" in args and not _tensorrt_missing():
        pytest.skip("TensorRT and a GPU are present here")
    code, _, err = run_cli(capsys, "models", "export", MODEL, "--out", tmp_path / "m.onnx", *args)
    _assert_one_line_error(code, err, *fragments)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--int8",), ("--int8 needs --runtime onnxruntime",)),
        (("--runtime", "onnxruntime", "--compile"), ("--compile applies to --runtime torch",)),
        (("--dtype", "fp16", "--device", "cpu"), ("--dtype fp16 needs a CUDA GPU",)),
    ],
)
def test_embed_bad_runtime_combinations_are_one_line(capsys, tmp_path: Path, args, fragments) -> None:
    code, _, err = run_cli(capsys, "embed", DEMO_VAL, "-m", MODEL, "-o", tmp_path / "e.safetensors", *args)
    _assert_one_line_error(code, err, *fragments)


def _tensorrt_missing() -> bool:
    from vfmkit.export.tensorrt import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason() is not None
