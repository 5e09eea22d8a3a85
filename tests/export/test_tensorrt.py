"""TensorRT engines: profiles and errors everywhere; the engine build itself only where TensorRT and a GPU are."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch

from vfmkit import load_backbone
from vfmkit.errors import VfmError
from vfmkit.export.backbone import export_backbone, reference_images
from vfmkit.export.tensorrt import (
    TensorRTUnavailable,
    build_tensorrt_engine,
    input_profiles,
    require_tensorrt,
    tensorrt_unavailable_reason,
)

MISSING = tensorrt_unavailable_reason()


def test_profile_takes_the_batch_range_and_fixes_dynamic_height_width_at_the_resolution() -> None:
    shapes = {"image": ["batch", 3, "height", "width"]}
    profile = input_profiles(shapes, {"resolution": "224x320"}, 1, 8, 32)["image"]
    assert (profile.min, profile.opt, profile.max) == ((1, 3, 224, 320), (8, 3, 224, 320), (32, 3, 224, 320))
    ranged = input_profiles(shapes, {"resolution": "224x224"}, 2, 4, 4, {"height": (224, 448, 896)})["image"]
    assert (ranged.min, ranged.opt, ranged.max) == ((2, 3, 224, 224), (4, 3, 448, 224), (4, 3, 896, 224))
    fixed = input_profiles({"input": ["batch", 3, 64, 64]}, {"resolution": "64"})["input"]
    assert fixed.max == (32, 3, 64, 64)


def test_profile_errors_name_the_problem() -> None:
    with pytest.raises(VfmError, match="needs 1 <= min <= opt <= max, got 4/2/8"):
        input_profiles({"image": ["batch", 3, 8, 8]}, {}, 4, 2, 8)
    with pytest.raises(VfmError, match="input 'tokens' has a symbolic axis 'length'"):
        input_profiles({"tokens": ["batch", "length"]}, {})


def test_missing_tensorrt_is_one_line_with_the_install_hint(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(TensorRTUnavailable) as error:
        require_tensorrt()
    message = str(error.value)
    assert "\n" not in message and "the tensorrt package is not installed" in message
    assert message.endswith("pip install tensorrt")


def test_bad_precision_and_int8_without_calibration_fail_before_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(VfmError, match="precision must be one of fp32, fp16, int8"):
        build_tensorrt_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "bf16")
    with pytest.raises(VfmError, match="needs calibration images"):
        build_tensorrt_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "int8")


@pytest.fixture(scope="module")
def radio_onnx(tmp_path_factory):
    torch.manual_seed(0)
    backbone = load_backbone("test-radio-v2-tiny").eval()
    path = tmp_path_factory.mktemp("trt") / "radio.onnx"
    export_backbone(backbone, path)
    return path, reference_images(backbone)


@pytest.mark.skipif(MISSING is not None, reason=f"TensorRT engines need TensorRT and a CUDA GPU: {MISSING}")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime(radio_onnx, precision, tmp_path: Path) -> None:
    path, images = radio_onnx
    result = build_tensorrt_engine(path, tmp_path / f"{precision}.engine", precision, verify_inputs=(images,))
    assert result.engine.is_file() and result.profiles["image"].max[0] == 32
    if precision == "fp32":
        assert max(result.max_abs_diff.values()) <= 1e-3
    assert min(result.mean_cosine.values()) >= 0.999


@pytest.mark.skipif(MISSING is not None, reason=f"TensorRT engines need TensorRT and a CUDA GPU: {MISSING}")
def test_int8_engine_calibrates_on_an_image_folder(radio_onnx, tmp_path: Path) -> None:
    from PIL import Image

    path, images = radio_onnx
    folder = tmp_path / "calibration"
    folder.mkdir()
    for index, image in enumerate(images):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"{index}.png")
    result = build_tensorrt_engine(path, tmp_path / "int8.engine", "int8", folder, (images,), opt_batch=2, max_batch=4)
    assert min(result.mean_cosine.values()) >= 0.99


def test_calibration_folder_gives_lazy_batches_at_the_profile_size(tmp_path: Path) -> None:
    from PIL import Image

    from vfmkit.export.runtime import OnnxModel
    from vfmkit.export.tensorrt import calibration_batches

    torch.manual_seed(0)
    path = export_backbone(load_backbone("test-dinov2-tiny").eval(), tmp_path / "d.onnx").path
    reference = OnnxModel(path)
    folder = tmp_path / "calibration"
    folder.mkdir()
    for index in range(5):
        Image.new("RGB", (40 + index, 30), (50 * index, 20, 200)).save(folder / f"{index}.png")
    profiles = input_profiles(reference.input_shapes, reference.metadata, 1, 2, 4)
    batches = [load() for load in calibration_batches(folder, reference, profiles)]
    assert [b["image"].shape for b in batches] == [(2, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64)]
    assert all(b["image"].dtype == np.float32 and 0 <= b["image"].min() <= b["image"].max() <= 1 for b in batches)
    given = calibration_batches([(np.zeros((2, 3, 64, 64)),)], reference, profiles)[0]()
    assert given["image"].dtype == np.float32
    with pytest.raises(VfmError, match="calibration batches must be non-empty tuples of 1 arrays"):
        calibration_batches([(np.zeros(1), np.zeros(1))], reference, profiles)
