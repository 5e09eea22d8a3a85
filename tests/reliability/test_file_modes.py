"""Atomically written files respect the umask like every other file (``tempfile.mkstemp`` and
``safetensors.save_file`` alone make them 0600), and a failed write leaves neither a temp file nor a changed file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vfmkit.engine import run_dir
from vfmkit.utils.atomic import atomic_output, atomic_write_bytes, atomic_write_text, stale_temp_files


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request) -> int:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writers_respect_the_umask(tmp_path: Path, umask: int) -> None:
    expected = 0o666 & ~umask
    plain = tmp_path / "plain.txt"
    plain.write_text("a normal file, for comparison")
    run_dir.atomic_write_text(tmp_path / "spec.resolved.yaml", "name: x\n")  # what the engine's writers call
    atomic_write_text(tmp_path / "sub" / "metrics.json", "{}")
    atomic_write_bytes(tmp_path / "blob.bin", b"\x00\x01")
    with atomic_output(tmp_path / "features.safetensors") as tmp:
        save_file({"summary": torch.zeros(2, 3)}, str(tmp))  # safetensors itself creates 0600 files
    with atomic_output(tmp_path / "last.ckpt") as tmp:
        torch.save({"epoch": 1}, tmp)
    written = ["spec.resolved.yaml", "sub/metrics.json", "blob.bin", "features.safetensors", "last.ckpt"]
    assert {name: oct(_mode(tmp_path / name)) for name in written} == dict.fromkeys(written, oct(expected))
    assert _mode(plain) == expected
    assert stale_temp_files(tmp_path) == [] and stale_temp_files(tmp_path / "sub") == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_output(target) as tmp:
        tmp.write_text("half of the new con")
        assert stale_temp_files(tmp_path, "metrics.json") == [tmp]
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert stale_temp_files(tmp_path) == []


def test_stale_temp_files_are_found_by_target_name(tmp_path: Path) -> None:
    for name in (".last.ckpt.abc123.tmp", ".best.ckpt.x9.tmp", "last.ckpt", ".hidden"):
        (tmp_path / name).touch()
    assert [p.name for p in stale_temp_files(tmp_path, "last.ckpt")] == [".last.ckpt.abc123.tmp"]
    assert [p.name for p in stale_temp_files(tmp_path)] == [".best.ckpt.x9.tmp", ".last.ckpt.abc123.tmp"]


def test_pictures_and_figures_are_written_atomically_in_the_format_of_their_suffix(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from vfmkit.utils.atomic import save_figure_atomically, save_image_atomically

    picture = Image.new("RGB", (8, 6), (200, 10, 10))
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("c", "PNG")):
        save_image_atomically(picture, tmp_path / name)
        with Image.open(tmp_path / name) as saved:
            assert saved.format == fmt and saved.size == (8, 6)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure_atomically(fig, tmp_path / "plot.png")
    plt.close(fig)
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not stale_temp_files(tmp_path)

    class Broken:
        def save(self, path, format):  # noqa: A002 - PIL's keyword
            Path(path).write_bytes(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        save_image_atomically(Broken(), tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as kept:  # the old picture stays whole
        assert kept.format == "PNG"
    assert not stale_temp_files(tmp_path)
