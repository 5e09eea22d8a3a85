"""The onnxruntime backbone runner and its export cache: reuse, invalidation, corruption, first-batch checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import vfmkit.export.onnx_runner as onnx_runner
from vfmkit import load_backbone
from vfmkit.errors import VfmError
from vfmkit.export.backbone import reference_images
from vfmkit.export.cache import ExportKey, OnnxCache, cache_root
from vfmkit.export.onnx_runner import OnnxBackboneRunner

MODEL = "test-radio-v2-tiny"


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_backbone(MODEL).eval()


@pytest.fixture(scope="module")
def images(backbone) -> torch.Tensor:
    return reference_images(backbone, count=3)


@pytest.fixture()
def exports(monkeypatch) -> list[Path]:
    """Records every export the runner makes."""
    made: list[Path] = []
    real = onnx_runner.export_backbone

    def recording(backbone, path, *args, **kwargs):
        made.append(Path(path))
        return real(backbone, path, *args, **kwargs)

    monkeypatch.setattr(onnx_runner, "export_backbone", recording)
    return made


def _run(backbone, images, cache: OnnxCache, **kwargs) -> tuple[torch.Tensor, list[str]]:
    reports: list[str] = []
    runner = OnnxBackboneRunner(backbone, MODEL, cache=cache, report=reports.append, **kwargs)
    return runner(images).summary, reports


def _eager(backbone, images) -> torch.Tensor:
    with torch.inference_mode():
        return backbone(images).summary


def test_second_run_reuses_the_cached_export(backbone, images, exports, tmp_path: Path) -> None:
    cache = OnnxCache(tmp_path)
    first, reports = _run(backbone, images, cache)
    second, again = _run(backbone, images, cache)
    assert len(exports) == 1
    assert any(r.startswith("exported test-radio-v2-tiny at 64x64") for r in reports)
    assert not any(r.startswith("exported") for r in again)
    assert any("max abs diff to PyTorch on the first batch (3 images)" in r for r in again)
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    torch.testing.assert_close(first, _eager(backbone, images), atol=1e-4, rtol=0)


def test_new_weights_export_again_and_drop_the_old_entry(backbone, images, exports, tmp_path: Path) -> None:
    cache = OnnxCache(tmp_path)
    _run(backbone, images, cache)
    changed = copy.deepcopy(backbone)
    with torch.no_grad():
        changed.model.blocks[0].mlp.fc1.weight.add_(0.05)
    summary, _ = _run(changed, images, cache)
    assert len(exports) == 2
    assert [p.name for p in tmp_path.glob("*.onnx")] == [exports[1].name]
    torch.testing.assert_close(summary, _eager(changed, images), atol=1e-4, rtol=0)


def test_a_corrupt_file_is_rebuilt_not_used(backbone, images, exports, tmp_path: Path) -> None:
    cache = OnnxCache(tmp_path)
    _run(backbone, images, cache)
    cached = exports[0]
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])  # truncated
    summary, _ = _run(backbone, images, cache)
    assert len(exports) == 2
    torch.testing.assert_close(summary, _eager(backbone, images), atol=1e-4, rtol=0)


def test_a_valid_graph_of_other_weights_in_place_is_never_used(backbone, images, exports, tmp_path: Path) -> None:
    """The file is swapped for a loadable export of different weights: only the recorded sha256 can tell."""
    cache = OnnxCache(tmp_path)
    _run(backbone, images, cache)
    other = copy.deepcopy(backbone)
    with torch.no_grad():
        other.model.blocks[1].attn.qkv.weight.mul_(1.5)
    _run(other, images, OnnxCache(tmp_path / "other"))
    exports[1].replace(exports[0])
    summary, _ = _run(backbone, images, cache)
    assert len(exports) == 3
    torch.testing.assert_close(summary, _eager(backbone, images), atol=1e-4, rtol=0)


def test_int8_reports_the_cosine_and_is_refused_below_min_cosine(backbone, images, exports, tmp_path: Path) -> None:
    cache = OnnxCache(tmp_path)
    summary, reports = _run(backbone, images, cache, int8=True)
    line = next(r for r in reports if r.startswith("onnxruntime int8"))
    assert "cosine to PyTorch fp32 on the first batch (3 images): summary min 0.9" in line
    assert torch.nn.functional.cosine_similarity(summary, _eager(backbone, images)).min() >= 0.99
    with pytest.raises(VfmError, match=r"int8 output of test-radio-v2-tiny refused: mean summary cosine .* below "):
        _run(backbone, images, cache, int8=True, min_cosine=1.0)
    assert len(exports) == 1  # fp32 and int8 graphs both came from the cache the second time
    assert len(list(tmp_path.glob("*-int8-*.onnx"))) == 1


def test_cache_key_and_location(monkeypatch, tmp_path: Path) -> None:
    key = ExportKey("hf-hub:nvidia/C-RADIOv3-B", "ab" * 32, (224, 224), 17, True, ("siglip",))
    assert OnnxCache(tmp_path).path_for(key).name.startswith("hf-hub_nvidia_C-RADIOv3-B+siglip-224x224-opset17-int8-")
    assert key.digest() != ExportKey(key.model_id, "cd" * 32, (224, 224), 17, True, ("siglip",)).digest()
    monkeypatch.setenv("VFMKIT_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine" / "onnx"
    monkeypatch.delenv("VFMKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "vfmkit" / "onnx"
