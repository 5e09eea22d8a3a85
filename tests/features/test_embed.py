"""Batched feature extraction: rows match a direct forward, the index states the order, failures are listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from vfmkit._version import __version__
from vfmkit.data.preprocess import preprocess_images
from vfmkit.errors import DataError, VfmError
from vfmkit.features.embed import embed_source, extract_embeddings, index_path_for
from vfmkit.models.factory import load_backbone

MODEL = "test-radio-v2-tiny"


@pytest.fixture(scope="module")
def model():
    return load_backbone(MODEL)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Five images of varied size and mode, and one corrupt file sorted in the middle."""
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for index, (width, height) in enumerate([(40, 30), (64, 64), (50, 90), (33, 33), (80, 20)]):
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(array).convert("L" if index == 3 else "RGB")
        image.save(root / f"img{index}.png")
    (root / "img2b.png").write_bytes(b"\x89PNG broken")
    return root


def _readable(folder: Path) -> list[Path]:
    return [folder / f"img{i}.png" for i in range(5)]


def test_rows_match_a_direct_forward_in_index_order(model, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "feats.safetensors"
    result = embed_source(folder, model, out, batch_size=2, what="both", progress=False)
    index = json.loads(index_path_for(out).read_text())
    assert result.index == tmp_path / "out" / "feats.index.json"
    assert index["files"] == [str(p) for p in _readable(folder)]
    assert index["skipped"] == [{"path": str(folder / "img2b.png"), "error": result.embeddings.skipped[0].error}]
    assert "img2b.png" in index["skipped"][0]["error"]

    tensors = load_file(out)
    with torch.inference_mode():
        expected = model(preprocess_images(_readable(folder), model))
    assert set(tensors) == {"summary", "spatial"}
    torch.testing.assert_close(tensors["summary"], expected.summary, atol=1e-5, rtol=0)
    torch.testing.assert_close(tensors["spatial"], expected.spatial(), atol=1e-5, rtol=0)
    assert tensors["summary"].dtype == torch.float32
    assert index["tensors"]["spatial"] == list(expected.spatial().shape)


def test_metadata(model, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "feats.safetensors"
    embed_source(folder, model, out, resolution=32, what="summary", progress=False)
    with safe_open(str(out), "pt") as handle:
        metadata = handle.metadata()
        assert list(handle.keys()) == ["summary"]
    assert metadata["resolution"] == "32x32"
    assert metadata["what"] == "summary"
    assert metadata["vfmkit_version"] == __version__
    assert metadata["index"] == "feats.index.json"
    assert json.loads((tmp_path / "feats.index.json").read_text())["resolution"] == [32, 32]


def test_model_id_is_recorded_when_loaded_by_name(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.safetensors"
    result = embed_source(folder, MODEL, out, what="spatial", adaptors=["siglip"], progress=False)
    tensors = load_file(out)
    assert set(tensors) == {"spatial", "adaptor.siglip.spatial"}
    assert tensors["spatial"].shape[0] == tensors["adaptor.siglip.spatial"].shape[0] == 5
    with safe_open(str(out), "pt") as handle:
        assert handle.metadata()["model"] == MODEL
    assert len(result.embeddings.skipped) == 1


def test_worker_processes_give_the_same_rows(model, folder: Path) -> None:
    files = sorted(folder.iterdir())
    serial = extract_embeddings(model, files, batch_size=2, num_workers=0, progress=False)
    parallel = extract_embeddings(model, files, batch_size=2, num_workers=2, progress=False)
    assert serial.files == parallel.files == _readable(folder)
    torch.testing.assert_close(serial.tensors["summary"], parallel.tensors["summary"], atol=1e-6, rtol=0)
    assert [s.path for s in parallel.skipped] == [folder / "img2b.png"]


def test_progress_callback_and_plain_lines(model, folder: Path, capsys) -> None:
    calls = []
    extract_embeddings(model, sorted(folder.iterdir()), batch_size=4, on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 6), (6, 6)]
    assert "embed: 6/6 images (100%)" in capsys.readouterr().err


def test_every_image_unreadable_is_an_error(model, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="none of the 1 images"):
        extract_embeddings(model, [tmp_path / "a.png"], progress=False)


def test_bad_arguments(model, folder: Path, tmp_path: Path) -> None:
    with pytest.raises(VfmError, match="what must be one of"):
        embed_source(folder, model, tmp_path / "x.safetensors", what="all", progress=False)
    with pytest.raises(VfmError, match="batch size"):
        extract_embeddings(model, [folder / "img0.png"], batch_size=0, progress=False)
    with pytest.raises(VfmError, match="multiple"):
        extract_embeddings(model, [folder / "img0.png"], resolution=50, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        embed_source(tmp_path / "nowhere", model, tmp_path / "x.safetensors", progress=False)
