"""The decoding-preflight contract: every registered task's training preflight, given a training folder holding a
truncated JPEG, a zero-byte PNG, a symlinked sub-folder and a hidden folder, has the same outcome: the two broken
files are left out, listed on the console in the shared format and recorded; an image in the symlinked folder is
read; a copy in the hidden folder is not (for the layouts that are discovered by walking a folder)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from tests.tasks.contract_cases import CASES, COMMON

from vfmkit import Task
from vfmkit.engine.train import prepare_data


@dataclass(frozen=True)
class TrainFiles:
    """Where a case's training images lie (below the data root).

    Attributes:
        images: the training image files a sample reads, in order (the broken files are picked among them).
        walked: the folder that is walked to find training images, and the partner folders whose files must move
            with an image (a mask folder); None for layouts listed by an annotation or list file.
    """

    images: Callable[[Path], list[Path]]
    walked: Callable[[Path], tuple[Path, list[Path]]] | None = None


def _sorted(pattern: str) -> Callable[[Path], list[Path]]:
    return lambda root: sorted(root.glob(pattern))


def _levir_train(root: Path) -> list[Path]:
    return [root / "A" / name for name in (root / "list" / "train.txt").read_text().split()]


LAYOUTS = {
    ("classify", None): TrainFiles(_sorted("train/*/*.png"), lambda root: (sorted(root.glob("train/*"))[0], [])),
    ("segment", None): TrainFiles(
        _sorted("images/train/*.png"), lambda root: (root / "images" / "train", [root / "masks" / "train"])
    ),
    ("change", "segment"): TrainFiles(_levir_train),
    ("change", "classify"): TrainFiles(_sorted("test/train/*_L0.png")),
    ("detect", None): TrainFiles(_sorted("train/images/*.png")),
    ("detect", "light"): TrainFiles(_sorted("train/images/*.png")),  # the same data as the rtdetr case
    ("universal", None): TrainFiles(_sorted("images/train/*.png")),
    ("clip", None): TrainFiles(_sorted("train/images/*.png")),
    ("distill", None): TrainFiles(_sorted("images/train/*.png"), lambda root: (root / "images" / "train", [])),
}


def test_every_contract_case_has_a_layout() -> None:
    assert set(LAYOUTS) == set(CASES)


def _replace(path: Path, data: bytes) -> None:
    """New content in a new file (a hard-linked copy elsewhere keeps the old bytes)."""
    path.unlink()
    path.write_bytes(data)


def _truncated_jpeg(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def _link_and_hide(folder: Path, partners: list[Path], tmp: Path) -> tuple[Path, Path]:
    """Move the last image of ``folder`` (and its partner files) into folders outside the dataset, linked back as
    ``sub/``; put a copy of another image in ``.ipynb_checkpoints/``. Returns (moved image as seen through the
    link, hidden copy)."""
    moved = sorted(folder.glob("*.png"))[-1]
    for index, where in enumerate([folder, *partners]):
        outside = tmp / f"outside{index}"
        outside.mkdir()
        (where / moved.name).rename(outside / moved.name)
        (where / "sub").symlink_to(outside)
    hidden = folder / ".ipynb_checkpoints"
    hidden.mkdir()
    copy = hidden / "copy-checkpoint.png"
    shutil.copy(sorted(folder.glob("*.png"))[0], copy)
    return folder / "sub" / moved.name, copy


def _train_size(data) -> int:
    return len(data.split("train"))


@pytest.mark.parametrize("key", list(CASES), ids=lambda key: "-".join(k for k in key if k))
def test_the_training_preflight_leaves_out_lists_and_records_the_same_way(key, tmp_path, capsys) -> None:
    case, layout = CASES[key], LAYOUTS[key]
    root = tmp_path / "data"
    task = Task(case.task, None, [*case.data(root), *COMMON, *case.extra, f"results_dir={tmp_path / 'runs'}"])
    taskdef = task.family.select(task.spec)
    clean, recorded = prepare_data(taskdef, task.spec)
    assert recorded == []
    truncated, empty = layout.images(root)[:2]
    _replace(truncated, _truncated_jpeg(truncated))
    _replace(empty, b"")
    linked = hidden = None
    if layout.walked is not None:
        linked, hidden = _link_and_hide(*layout.walked(root), tmp_path)
    capsys.readouterr()

    data, left_out = prepare_data(taskdef, task.spec)

    printed = capsys.readouterr().out
    assert {(item.split, Path(item.path).name, item.kind) for item in left_out} == {
        ("train", truncated.name, "unreadable"),
        ("train", empty.name, "unreadable"),
    }
    assert all(item.reason.startswith("cannot read") for item in left_out)
    assert "left out of train: " in printed and truncated.name in printed and empty.name in printed
    assert data.summary["left out (unreadable or too small)"].startswith("2 file(s) (train: 2)")
    assert _train_size(data) == _train_size(clean) - 2  # (change classify: the CSV rows that read the broken files)
    if linked is not None:
        assert str(hidden) not in printed
        assert _read_through(data, linked) and not _read_through(data, hidden)


def _read_through(data, path: Path) -> bool:
    """Whether the training split of ``data`` reads ``path`` (as listed, through the link)."""
    split = data.split("train")
    listed = getattr(split, "files", None)
    if listed is None:
        listed = getattr(split, "images", split)
    return any(str(path) == str(item) for item in listed)
