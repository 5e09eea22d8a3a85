"""The `vfm` command line: output, one-line errors with exit code 2, and the demo end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from vfmkit.cli.main import main

MODEL = "test-radio-v2-tiny"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``vfm args...`` in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / f"{index}.png")
    return root


def test_bad_source_is_a_one_line_error(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "embed", tmp_path / "missing", "--model", MODEL)
    _assert_one_line_error(code, err, "missing", "does not exist")


def test_unknown_model_is_a_one_line_error(capsys, images: Path) -> None:
    code, _, err = run_cli(capsys, "embed", images, "--model", "c-radio-v9-zz")
    _assert_one_line_error(code, err, "c-radio-v9-zz")


def test_usage_errors_are_one_line(capsys, images: Path) -> None:
    _assert_one_line_error(*run_cli(capsys, "embed", images)[::2], "--model")
    _assert_one_line_error(*run_cli(capsys, "embed", images, "-m", MODEL, "--what", "all")[::2], "--what")
    _assert_one_line_error(*run_cli(capsys, "knn", "--train", images, "--val", images, "-m", MODEL)[::2], "no class")


@pytest.mark.parametrize(
    "args",
    [["embed", "/definitely/not/here", "--model", MODEL], ["embed", ".", "--model", "no-such-model"]],
    ids=["bad-source", "bad-model"],
)
def test_console_errors_in_a_fresh_process(args: list[str]) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "vfmkit.cli.main", *args], capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 2
    assert "Traceback" not in process.stdout + process.stderr
    assert len(process.stderr.strip().splitlines()) == 1
    assert process.stderr.startswith("error: ")


def test_models_table_and_show(capsys) -> None:
    code, out, _ = run_cli(capsys, "models", "--all")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split() == ["id", "family", "params", "resolution", "license", "source"]
    assert any(row.startswith(MODEL + " ") for row in rows)
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and MODEL not in out
    code, out, _ = run_cli(capsys, "models", "show", MODEL)
    assert code == 0
    assert f"id: {MODEL}" in out and "family: radio" in out and "patch_size: 16" in out
    _assert_one_line_error(*run_cli(capsys, "models", "show", "nope-model")[::2], "nope-model")


def test_embed_pca_knn_commands(capsys, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.safetensors"
    code, stdout, _ = run_cli(capsys, "embed", images, "-m", MODEL, "--what", "both", "--out", out, "-r", 32)
    assert code == 0
    assert str(out) in stdout and "f.index.json" in stdout
    assert load_file(out)["spatial"].shape == (3, 64, 2, 2)

    code, stdout, _ = run_cli(capsys, "pca", images, "-m", MODEL, "--out", tmp_path / "pca")
    assert code == 0 and "3 PCA picture(s)" in stdout
    assert len(list((tmp_path / "pca").glob("*.png"))) == 3

    demo = resources.files("vfmkit") / "assets" / "demo"
    code, stdout, _ = run_cli(capsys, "knn", "--train", demo / "train", "--val", demo / "val", "-m", MODEL, "--k", 5)
    assert code == 0
    assert "k-NN (k=5, T=0.07): 32 train / 16 val images, 4 classes" in stdout
    assert "top-1 " in stdout and "top-5 " in stdout


def test_demo_assets_ship_with_the_package() -> None:
    demo = resources.files("vfmkit") / "assets" / "demo"
    for split, count in (("train", 8), ("val", 4)):
        classes = sorted(p.name for p in (demo / split).iterdir())
        assert classes == ["checkers", "circles", "squares", "stripes"]
        for name in classes:
            assert len([p for p in (demo / split / name).iterdir() if p.name.endswith(".png")]) == count


def test_demo_end_to_end(capsys, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, stdout, _ = run_cli(capsys, "demo", "--out", out)
    assert code == 0
    for path in ("features.safetensors", "features.index.json", "knn.json", "pca"):
        assert str(out / path) in stdout
    tensors = load_file(out / "features.safetensors")
    assert tensors["summary"].shape[0] == tensors["spatial"].shape[0] == 48
    index = json.loads((out / "features.index.json").read_text())
    assert len(index["files"]) == 48 and index["skipped"] == []
    assert len(list((out / "pca").glob("*.png"))) == 16
    knn = json.loads((out / "knn.json").read_text())
    assert knn["model"] == MODEL and knn["num_val"] == 16
    assert knn["top1"] > 50.0  # chance is 25%


def test_demo_assets_from_a_zipped_package(monkeypatch, tmp_path: Path) -> None:
    import zipfile

    from vfmkit.features import demo as demo_module

    archive = tmp_path / "vfmkit.zip"
    shipped = Path(str(resources.files("vfmkit") / "assets" / "demo"))
    with zipfile.ZipFile(archive, "w") as handle:
        for file in sorted(shipped.rglob("*")):
            if file.is_file():
                handle.write(file, f"vfmkit/assets/demo/{file.relative_to(shipped).as_posix()}")
    monkeypatch.setattr(demo_module.resources, "files", lambda package: zipfile.Path(archive, "vfmkit/"))
    copied = demo_module.demo_assets(tmp_path / "out")
    assert copied == tmp_path / "out" / "assets"
    assert sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*.png")) == sorted(
        p.relative_to(shipped).as_posix() for p in shipped.rglob("*.png")
    )


def test_worker_errors_keep_only_the_original_line():
    from torch.utils.data import DataLoader, Dataset

    from vfmkit.cli.main import user_message
    from vfmkit.errors import DataError

    class Broken(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise DataError("bad.png: not an image (expected PNG)")

    try:
        list(DataLoader(Broken(), num_workers=1))
    except DataError as err:
        assert "Traceback" in str(err)
        assert user_message(err) == "bad.png: not an image (expected PNG)"
    else:
        raise AssertionError("the loader did not raise")
