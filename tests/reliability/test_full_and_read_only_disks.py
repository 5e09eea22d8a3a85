"""Outputs on a full or read-only disk: one ``error:`` line, exit code 2, no temporary files left behind. The disks
are small tmpfs mounts, made where the test may mount (root with CAP_SYS_ADMIN); elsewhere the tests skip, saying
why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.synthetic import make_shapes_dataset

from vfmkit.cli.main import main

TINY = [
    "model.backbone=test-radio-v2-tiny",
    "model.resolution=32",
    "train.num_workers=0",
    "train.batch_size=4",
    "model.mode=finetune",
    "train.epochs=1",
]


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}); needs root with CAP_SYS_ADMIN"
        )


@pytest.fixture
def disk(tmp_path):
    mounted: list[Path] = []

    def make(name: str, options: str) -> Path:
        target = tmp_path / name
        _mount(target, options)
        mounted.append(target)
        return target

    yield make
    for target in mounted:
        subprocess.run(["umount", str(target)], check=False)


def _train(capsys, data, results) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["classify", "train", f"dataset.root={data}", f"results_dir={results}", *TINY])
    return exit_info.value.code, capsys.readouterr().err


def test_a_full_disk_during_the_checkpoint_save(disk, tmp_path, capsys) -> None:
    data = make_shapes_dataset(tmp_path / "data", {"train": 2, "val": 1}, size=32)
    full = disk("full", "size=160k")  # room for the run folder files, not for a checkpoint
    code, err = _train(capsys, data, full)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: cannot write") and "No space left on device" in lines[0]
    assert not [p for p in full.rglob("*") if p.name.endswith(".tmp")]


def test_a_read_only_disk(disk, tmp_path, capsys) -> None:
    data = make_shapes_dataset(tmp_path / "data", {"train": 2, "val": 1}, size=32)
    read_only = disk("ro", "ro,size=64k")
    code, err = _train(capsys, data, read_only)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: cannot write") and "Read-only file system" in lines[0]
