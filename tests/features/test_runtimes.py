"""Runtimes of feature extraction: onnxruntime rows equal eager rows, int8 close, option checks, the feature cache."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from vfmkit import load_backbone
from vfmkit.errors import VfmError
from vfmkit.features.embed import embed_source
from vfmkit.features.knn import knn_evaluate
from vfmkit.features.pca import pca_source
from vfmkit.features.runners import RuntimeOptions, TorchRunner, make_runner
from vfmkit.tasks.classify.features import ClassificationSplit, cached_summaries

DEMO = Path(str(resources.files("vfmkit").joinpath("assets", "demo")))


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_backbone("test-radio-v2-tiny", adaptors=["siglip"]).eval()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One ONNX cache for the module: the export is made by the first test that needs it."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def eager(backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("eager") / "eager.safetensors"
    return embed_source(DEMO / "val", backbone, out, what="both", progress=False).embeddings


def _onnx(cache: Path, int8: bool = False) -> RuntimeOptions:
    return RuntimeOptions(runtime="onnxruntime", int8=int8, cache_dir=cache)


def test_onnxruntime_rows_equal_eager_rows(backbone, eager, cache, tmp_path: Path) -> None:
    out = tmp_path / "ort.safetensors"
    result = embed_source(DEMO / "val", backbone, out, what="both", progress=False, runtime=_onnx(cache))
    assert result.embeddings.files == eager.files
    assert set(result.embeddings.tensors) == set(eager.tensors) == {
        "summary", "spatial", "adaptor.siglip.summary", "adaptor.siglip.spatial"
    }  # fmt: skip
    for key, rows in result.embeddings.tensors.items():
        torch.testing.assert_close(rows, eager.tensors[key], atol=1e-4, rtol=0, msg=key)
    with safe_open(str(out), "pt") as stored:
        assert stored.metadata()["runtime"] == "onnxruntime-fp32-opset17"


def test_int8_rows_stay_close_to_eager(backbone, eager, cache, tmp_path: Path) -> None:
    result = embed_source(
        DEMO / "val", backbone, tmp_path / "i8.safetensors", progress=False, runtime=_onnx(cache, True)
    )
    cosine = torch.nn.functional.cosine_similarity(result.embeddings.tensors["summary"], eager.tensors["summary"])
    assert cosine.min() >= 0.99


def test_knn_and_pca_run_on_onnxruntime(backbone, cache, tmp_path: Path) -> None:
    reference = knn_evaluate(DEMO / "train", DEMO / "val", backbone, progress=False)
    onnx = knn_evaluate(DEMO / "train", DEMO / "val", backbone, progress=False, runtime=_onnx(cache))
    assert (onnx.top1, onnx.top5, onnx.per_class) == (reference.top1, reference.top5, reference.per_class)
    pictures = pca_source(DEMO / "val" / "circles", backbone, tmp_path / "pca", progress=False, runtime=_onnx(cache))
    assert len(pictures.pictures) == 4 and all(p.is_file() for p in pictures.pictures)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (RuntimeOptions(int8=True), "--int8 needs --runtime onnxruntime"),
        (RuntimeOptions(runtime="onnxruntime", dtype="bf16"), "--dtype applies to --runtime torch"),
        (RuntimeOptions(runtime="onnxruntime", compile=True, dtype="fp16"), "--dtype and --compile apply to --runtime"),
        (RuntimeOptions(runtime="onnxruntime", device="cuda"), "--runtime onnxruntime runs on the CPU"),
        (RuntimeOptions(runtime="tensorflow"), "--runtime must be one of torch, onnxruntime"),
        (RuntimeOptions(runtime="onnxruntime", int8=True, min_cosine=1.5), r"--min-cosine must be in \(0, 1\]"),
    ],
)
def test_combinations_that_cannot_work_are_refused(backbone, options, message) -> None:
    with pytest.raises(VfmError, match=message):
        make_runner(backbone, "m", options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusals")
def test_gpu_only_options_are_refused_on_the_cpu(backbone) -> None:
    with pytest.raises(VfmError, match="--dtype fp16 needs a CUDA GPU"):
        make_runner(backbone, "m", RuntimeOptions(dtype="fp16"))
    with pytest.raises(VfmError, match="--device cuda: no CUDA GPU is visible"):
        make_runner(backbone, "m", RuntimeOptions(device="cuda"))


def test_bf16_autocast_on_the_cpu_stays_close_to_fp32(backbone, eager) -> None:
    runner = make_runner(backbone, "m", RuntimeOptions(dtype="bf16", device="cpu"))
    assert isinstance(runner, TorchRunner) and runner.cache_tag == "torch-bf16"
    images = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        expected = backbone(images).summary
    summary = runner(images).summary.float()
    assert torch.nn.functional.cosine_similarity(summary, expected).min() >= 0.98


def test_linear_probe_feature_cache_takes_a_runner(backbone, cache, tmp_path: Path) -> None:
    files = sorted((DEMO / "val").glob("*/*.png"))[:6]
    split = ClassificationSplit("val", files, torch.arange(6) % 2, ["a", "b"], DEMO / "val")
    eager_rows, hit = cached_summaries(backbone, split, 64, tmp_path)
    runner = make_runner(backbone, "test-radio-v2-tiny", _onnx(cache))
    onnx_rows, onnx_hit = cached_summaries(backbone, split, 64, tmp_path, runner=runner)
    assert not hit and not onnx_hit  # the runner's numerics get their own cache entry
    torch.testing.assert_close(onnx_rows, eager_rows, atol=1e-4, rtol=0)
    assert cached_summaries(backbone, split, 64, tmp_path, runner=runner)[1]
