"""`vfm embed --out FOLDER`: shards equal the single file, resume rebuilds what is missing or torn, other settings are
refused, WebDataset shards equal the same images in a folder, and two gloo ranks equal one process."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vfmkit.cli.main import main
from vfmkit.errors import DataError, VfmError
from vfmkit.features.embed import embed_source
from vfmkit.features.reader import open_embeddings
from vfmkit.features.sharded import embed_to_folder

MODEL = "test-radio-v2-tiny"
SIZE = 32


def make_images(root: Path, count: int, seed: int = 0, broken: tuple[int, ...] = ()) -> Path:
    """``count`` PNGs of varied size (``img000.png`` ...), and a corrupt ``imgNNNb.png`` after each index in
    ``broken``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = (int(v) for v in rng.integers(24, 72, 2))
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / f"img{index:03d}.png")
        if index in broken:
            (root / f"img{index:03d}b.png").write_bytes(b"\x89PNG torn")
    return root


def embed(source, out: Path, **options):
    settings = dict(resolution=SIZE, batch_size=4, what="both", shard_size=4, progress=False, num_workers=0)
    return embed_to_folder(source, MODEL, out, **{**settings, **options})


def assert_same_rows(got: Path, expected: Path) -> None:
    a, b = open_embeddings(got), open_embeddings(expected)
    assert a.paths == b.paths
    assert a.keys == b.keys
    for key in a.keys:
        np.testing.assert_array_equal(a[key][:], b[key][:])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("sharded") / "images", 10, broken=(4,))


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory) -> Path:
    return embed(images, tmp_path_factory.mktemp("reference") / "emb").out


def test_sharded_rows_equal_the_single_file_rows(images: Path, reference: Path, tmp_path: Path) -> None:
    single = embed_source(images, MODEL, tmp_path / "f.safetensors", SIZE, 4, "both", progress=False)
    view, file_view = open_embeddings(reference), open_embeddings(single.out)
    assert view.paths == file_view.paths == [str(p) for p in single.embeddings.files]
    for key in ("summary", "spatial"):
        np.testing.assert_array_equal(view[key][:], single.embeddings.tensors[key].numpy())
        np.testing.assert_array_equal(file_view[key][:], single.embeddings.tensors[key].numpy())
    rows = np.array([7, 0, 3, -1])
    np.testing.assert_array_equal(view["summary"][rows], single.embeddings.tensors["summary"].numpy()[rows])
    np.testing.assert_array_equal(view["summary"][2:9:3], single.embeddings.tensors["summary"].numpy()[2:9:3])
    assert [path for path, _ in view.skipped] == [str(images / "img004b.png")]


def test_layout_manifest_and_parquet_columns(images: Path, reference: Path) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_items"] == 11 and manifest["num_shards"] == 3
    assert (manifest["num_rows"], manifest["num_skipped"]) == (10, 1)
    assert [item["path"] for item in manifest["skipped"]] == [str(images / "img004b.png")]
    assert "img004b.png" in manifest["skipped"][0]["reason"]
    assert manifest["resolution"] == [SIZE, SIZE] and manifest["what"] == "both" and manifest["model"] == MODEL
    assert manifest["runtime"] == "torch-fp32" and manifest["store_dtype"] == "fp32"
    assert [s["rows"] for s in manifest["shards"]] == [4, 3, 3]
    assert manifest["tensors"]["summary"] == [192] and manifest["tensors"]["spatial"] == [64, 2, 2]
    table = pq.read_table(reference / "part-00001.parquet").to_pydict()
    assert table["path"] == [str(images / n) for n in ("img004.png", "img004b.png", "img005.png", "img006.png")]
    assert table["row"] == [0, None, 1, 2] and table["skipped"] == [False, True, False, False]
    assert "img004b.png" in table["reason"][1] and table["reason"][0] is None
    assert (table["width"][0], table["height"][0]) == Image.open(images / "img004.png").size
    assert table["width"][1] is None


def test_store_dtypes_round_to_fp16_and_bf16(images: Path, reference: Path, tmp_path: Path) -> None:
    exact = open_embeddings(reference)["summary"][:]
    for dtype, torch_dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        got = open_embeddings(embed(images, tmp_path / dtype, store_dtype=dtype).out)["summary"][:]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, torch.from_numpy(exact).to(torch_dtype).float().numpy())


def test_a_torn_or_missing_shard_is_rebuilt(images: Path, reference: Path, tmp_path: Path) -> None:
    out = embed(images, tmp_path / "emb").out
    torn = out / "part-00001.safetensors"
    torn.write_bytes(torn.read_bytes()[:-100])
    (out / "part-00002.parquet").unlink()
    (out / ".part-00000.safetensors.abc123.tmp").write_bytes(b"left by a killed writer")
    result = embed(images, out)
    assert (result.shards_written, result.shards_reused) == (2, 1)
    assert not list(out.glob(".*.tmp"))
    assert_same_rows(out, reference)


def test_other_settings_are_refused_naming_the_difference(images: Path, tmp_path: Path) -> None:
    out = embed(images, tmp_path / "emb").out
    with pytest.raises(DataError, match=r"resolution: folder 32x32, this run 64x64.*--overwrite"):
        embed(images, out, resolution=64)
    with pytest.raises(DataError, match=r"model: folder test-radio-v2-tiny, this run test-radio-v3-tiny"):
        embed_to_folder(images, "test-radio-v3-tiny", out, SIZE, what="both", shard_size=4, progress=False)
    with pytest.raises(DataError, match=r"--what: folder both, this run summary"):
        embed(images, out, what="summary")
    make_images(images.parent / "more", 3)
    with pytest.raises(DataError, match=r"number of images: folder 11, this run 3"):
        embed(images.parent / "more", out)
    result = embed(images, out, resolution=64, overwrite=True)
    assert result.resolution == (64, 64) and result.shards_written == 3


def test_an_interrupted_folder_is_not_opened(images: Path, tmp_path: Path) -> None:
    out = embed(images, tmp_path / "emb").out
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(DataError, match="incomplete.*rerun the same command"):
        open_embeddings(out)
    with pytest.raises(DataError, match="no embeddings at"):
        open_embeddings(tmp_path / "nothing")


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_webdataset_shards_equal_the_folder_and_a_truncated_tar_is_reported(tmp_path: Path) -> None:
    folder = make_images(tmp_path / "folder", 6)
    shards = tmp_path / "shards"
    shards.mkdir()
    files = sorted(folder.iterdir())
    for number, group in enumerate((files[:3], files[3:])):
        members = [(f"{p.stem}.png", p.read_bytes()) for p in group]
        members += [(f"{p.stem}.txt", b"a caption") for p in group]
        _write_tar(shards / f"{number:05d}.tar", members)
    from_folder = embed(folder, tmp_path / "a", shard_size=4)
    from_tars = embed(shards, tmp_path / "b", shard_size=4)
    view_a, view_b = open_embeddings(from_folder.out), open_embeddings(from_tars.out)
    assert view_b.paths == [f"{shards / f'{i // 3:05d}.tar'}/{p.stem}.png" for i, p in enumerate(files)]
    np.testing.assert_array_equal(view_a["spatial"][:], view_b["spatial"][:])

    cut = shards / "00001.tar"
    with tarfile.open(cut) as tar:
        second = tar.getmembers()[1]
    cut.write_bytes(cut.read_bytes()[: second.offset_data + 100])  # the first member whole, the second cut inside
    result = embed(str(shards / "*.tar"), tmp_path / "c", shard_size=4)
    assert result.num_rows == 4
    assert [item.path.name for item in result.skipped] == [f"{files[4].stem}.png"]
    assert "ends inside this member" in result.skipped[0].error
    np.testing.assert_array_equal(open_embeddings(result.out)["summary"][:], view_a["summary"][:4])
    cut.write_bytes(b"not a tar at all" * 40)
    result = embed(str(shards / "*.tar"), tmp_path / "d", shard_size=4)
    assert result.num_rows == 3 and "cannot read shard" in result.skipped[0].error


def test_two_gloo_ranks_equal_one_process(images: Path, reference: Path, tmp_path: Path) -> None:
    result = embed(images, tmp_path / "two", devices=2)
    assert (result.num_rows, result.shards_written) == (10, 3)
    assert_same_rows(result.out, reference)


def test_cli_folder_output_and_refusals(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "emb"
    command = ["embed", str(images), "-m", MODEL, "-r", "32", "--out", str(out), "--shard-size", "5", "-b", "4"]
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "embedded 10 images at 32x32" in printed and "3 written, 0 already complete" in printed
    assert "img004b.png" in printed
    with pytest.raises(SystemExit) as exit_info:
        main([*command[:-4], "--shard-size", "4", "-b", "4"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "--shard-size: folder 5, this run 4" in error
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", str(images), "-m", MODEL, "--out", str(tmp_path / "x.safetensors"), "--shard-size", "4"])
    assert exit_info.value.code == 2
    assert "--shard-size: only with --out FOLDER" in capsys.readouterr().err
    with pytest.raises(VfmError, match="--shard-size must be at least 1"):
        embed(images, tmp_path / "bad", shard_size=0)


def test_open_embeddings_from_the_package_and_progress_lines(reference: Path, capsys) -> None:
    from vfmkit.features import open_embeddings as exported
    from vfmkit.features.progress import Progress

    assert len(exported(reference)) == 10
    bar = Progress(40, "embed", interval_s=0.0)
    bar.update(10)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("embed: 10/40 images (25%), ") and ", ETA " in lines[0]


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(images: Path, reference: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    out = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "vfmkit.cli", "embed", str(images), "-m", MODEL, "-r", "32", "--what", "both", "--out", str(out),
               "--shard-size", "4", "-b", "4"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_rows(out, reference)


def test_recorded_shard_members_read_back(tmp_path: Path) -> None:
    from vfmkit.data.webdataset import parse_image_ref
    from vfmkit.errors import UnreadableFileError

    folder = make_images(tmp_path / "folder", 2)
    files = sorted(folder.iterdir())
    shard = _write_tar(tmp_path / "s.tar", [(f"k{i}.png", p.read_bytes()) for i, p in enumerate(files)])
    image = parse_image_ref(f"{shard}/k1.png").load()
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(files[1]).convert("RGB")))
    assert parse_image_ref(str(files[0])).member is None
    with pytest.raises(UnreadableFileError, match="no member 'k9.png'"):
        parse_image_ref(f"{shard}/k9.png")
