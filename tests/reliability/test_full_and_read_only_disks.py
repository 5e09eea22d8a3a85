"""Outputs on a full or read-only disk: one ``error:`` line naming the file, exit code 2, no temporary files left
behind; ``evaluate.out`` evaluates a run on read-only storage. The disks are small tmpfs mounts, made where the test
may mount (root with CAP_SYS_ADMIN); elsewhere the tests skip, saying why."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.synthetic import make_shapes_dataset

from vfmkit.cli.main import main
from vfmkit.task import Task

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


# --- D8: every writer names the file it could not write; evaluate.out for runs on read-only storage -----------------


def _fill(folder: Path) -> Path:
    """Take every free byte of the disk ``folder`` is on (a tmpfs): afterwards any write fails with ENOSPC."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("d8")
    data = make_shapes_dataset(root / "data", {"train": 2, "val": 1}, size=32)
    overrides = [f"dataset.root={data}", f"results_dir={root / 'runs'}", *TINY]
    run = Task("classify", None, overrides).train().run_dir
    return {"data": data, "run": run, "root": root}


def _cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err


def _full_disk_line(code: int, err: str, full: Path, path: str) -> None:
    """Exit code 2, no traceback, and one ``error:`` line (the last; progress lines may precede it) naming ``path``
    and the full disk; no temporary file left on the disk."""
    errors = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err, err
    assert errors[0].startswith("error: cannot write ") and path in errors[0], errors[0]
    assert "No space left on device" in errors[0], errors[0]
    assert not [p for p in full.rglob("*") if p.name.endswith(".tmp")]


def test_d8_full_disk_embed_both_names_the_file(disk, trained, capsys) -> None:
    full = _fill(disk("full", "size=64k"))
    out = full / "e.safetensors"
    args = ["embed", trained["data"] / "train", "-m", "test-radio-v2-tiny", "-r", "32", "--what", "both", "-o", out]
    _full_disk_line(*_cli(capsys, *args), full, str(out))


def test_d8_full_disk_pca_names_the_picture(disk, trained, capsys) -> None:
    full = _fill(disk("full", "size=64k"))
    code, err = _cli(capsys, "pca", trained["data"] / "val", "-m", "test-radio-v2-tiny", "-r", "32", "-o", full / "pca")
    _full_disk_line(code, err, full, f"{full / 'pca'}/")


def test_d8_full_disk_predict_names_the_results_file(disk, trained, capsys) -> None:
    full = _fill(disk("full", "size=64k"))
    out = full / "predictions.csv"
    args = ["classify", "predict", f"dataset.root={trained['data']}", f"predict.checkpoint={trained['run']}"]
    args += [f"predict.source={trained['data'] / 'val'}", f"predict.out={out}"]
    _full_disk_line(*_cli(capsys, *args), full, str(out))


def test_d8_full_disk_linear_probe_feature_cache_names_the_entry(disk, trained, tmp_path, capsys) -> None:
    full = _fill(disk("full", "size=64k"))
    results = tmp_path / "runs"
    (results / ".cache").mkdir(parents=True)
    (results / ".cache" / "features").symlink_to(full)  # the run folder has room, the feature cache does not
    args = ["classify", "train", f"dataset.root={trained['data']}", f"results_dir={results}", *TINY]
    code, err = _cli(capsys, *args, "model.mode=linear_probe")
    _full_disk_line(code, err, full, f"{results / '.cache' / 'features'}/train-")


def test_d8_full_disk_teacher_cache_names_the_entry(disk, trained, tmp_path, capsys) -> None:
    full = _fill(disk("full", "size=64k"))
    teacher = "[{backbone: test-radio-v3-tiny, pretrained: false, name: tiny, mode: combo}]"
    args = [
        "distill",
        "train",
        "model.backbone=test-radio-v2-tiny",
        "model.pretrained=false",
        "model.resolution=32",
        f"distill.teacher={teacher}",
        "distill.cache_teacher_outputs=true",
        f"distill.cache_dir={full / 'cache'}",
        f"dataset.train_nolabel.folder_path={trained['data'] / 'train'}",
        f"results_dir={tmp_path / 'runs'}",
        "train.num_workers=0",
        "train.batch_size=4",
    ]
    code, err = _cli(capsys, *args)
    _full_disk_line(code, err, full, f"{full / 'cache'}/tiny-")


def test_evaluate_out_evaluates_a_run_on_read_only_storage(disk, trained, tmp_path, capsys) -> None:
    storage = disk("ro", "size=8m")
    run = storage / "exp"
    shutil.copytree(trained["run"], run)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(storage)], capture_output=True, text=True)
    assert remount.returncode == 0, remount.stderr
    args = ["classify", "evaluate", f"dataset.root={trained['data']}", f"evaluate.checkpoint={run}"]
    code, err = _cli(capsys, *args)
    line = err.strip().splitlines()
    assert code == 2 and len(line) == 1 and "Read-only file system" in line[0] and "evaluate.out=" in line[0], err
    code, err = _cli(capsys, *args, f"evaluate.out={tmp_path / 'eval'}")
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    expected = json.loads((trained["run"] / "evaluate" / "val" / "metrics.json").read_text())
    assert metrics["top1"] == expected["top1"]
