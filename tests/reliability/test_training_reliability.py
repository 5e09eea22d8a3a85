"""What the training engine does when things go wrong: bad resumes, concurrent runs, leftovers of killed runs,
unreadable images, wrong checkpoints, unwritable outputs. In-process through the CLI's ``main`` (one ``error:``
line, exit code 2, nothing written) unless a real process is needed."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from PIL import Image
from tests.synthetic import make_segmentation_dataset, make_shapes_dataset

from vfmkit import Task
from vfmkit.cli.main import main
from vfmkit.engine.lock import RunLock

TINY = ["model.backbone=test-radio-v2-tiny", "model.resolution=32", "train.num_workers=0", "train.batch_size=4"]


def _cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err


def _one_error_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), {"train": 3, "val": 2}, size=32)


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    """One finished tiny classify run (1 epoch)."""
    results = tmp_path_factory.mktemp("runs")
    return Task(
        "classify",
        None,
        [f"dataset.root={shapes}", f"results_dir={results}", *TINY, "train.epochs=1", "model.mode=finetune"],
    ).train()


def _args(shapes, results, *more):
    return [
        "classify",
        "train",
        f"dataset.root={shapes}",
        f"results_dir={results}",
        *TINY,
        "model.mode=finetune",
        "train.epochs=1",
        *more,
    ]


def test_resume_from_a_checkpoint_outside_a_run_folder_writes_nothing(run, shapes, tmp_path, capsys) -> None:
    loose = tmp_path / "loose" / "last.ckpt"
    loose.parent.mkdir()
    shutil.copy(run.last_checkpoint, loose)
    code, err = _cli(capsys, *_args(shapes, tmp_path / "runs", f"train.resume={loose}"))
    assert code == 2
    _one_error_line(err, "not a run folder", "train.init_from")
    assert sorted(p.name for p in loose.parent.iterdir()) == ["last.ckpt"]  # nothing written beside it
    assert not (tmp_path / "runs").exists()


def test_resuming_with_another_tasks_spec_names_the_task_first(run, tmp_path, capsys) -> None:
    data = make_segmentation_dataset(tmp_path / "seg", {"train": 2, "val": 1}, size=32)
    palette = "[{name: a, id: 0}, {name: b, id: 1}, {name: c, id: 2}]"
    code, err = _cli(
        capsys,
        "segment",
        "train",
        f"dataset.root={data}",
        f"dataset.palette={palette}",
        *TINY,
        f"train.resume={run.run_dir}",
    )
    assert code == 2
    _one_error_line(err, "is a classify run with backbone test-radio-v2-tiny", "this spec is for segment")


def test_a_checkpoint_of_another_task_is_named_as_such(run, tmp_path, capsys) -> None:
    data = make_segmentation_dataset(tmp_path / "seg", {"train": 2, "val": 1}, size=32)
    palette = "[{name: a, id: 0}, {name: b, id: 1}, {name: c, id: 2}]"
    code, err = _cli(
        capsys,
        "segment",
        "evaluate",
        f"dataset.root={data}",
        f"dataset.palette={palette}",
        f"evaluate.checkpoint={run.run_dir}",
    )
    assert code == 2
    _one_error_line(err, "checkpoint of the 'classify' task (backbone test-radio-v2-tiny)", "`vfm segment`")


def test_an_onnx_file_given_to_evaluate_is_named_as_such(run, shapes, tmp_path, capsys) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not really onnx")
    code, err = _cli(capsys, "classify", "evaluate", f"dataset.root={shapes}", f"evaluate.checkpoint={fake}")
    assert code == 2
    _one_error_line(err, "is an exported ONNX graph", "run folder or a .ckpt")


def test_a_second_training_in_the_same_folder_is_refused(run, shapes, capsys) -> None:
    lock = RunLock(run.run_dir).acquire()  # as if another process were training there
    try:
        code, err = _cli(capsys, *_args(shapes, run.run_dir.parent.parent, "exist_ok=true"))
    finally:
        lock.release()
    assert code == 2
    _one_error_line(err, "is in use by another training", f"pid {os.getpid()}")
    assert len((run.run_dir / "metrics.csv").read_text().splitlines()) == 2  # untouched: header + 1 epoch


def test_a_resume_removes_the_leftovers_of_a_killed_run(run, shapes, tmp_path) -> None:
    copy = tmp_path / "classify" / "exp"
    shutil.copytree(run.run_dir, copy)
    stale = [
        copy / "checkpoints" / ".last.ckpt.tmp",
        copy / "checkpoints" / ".best.ckpt.tmp",
        copy / ".metrics.csv.abc123.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half written")
    # a changed spec is refused (nothing else happens), so resume with the same spec but more epochs is not possible:
    # resuming a finished run trains nothing more, and still cleans up
    spec = copy / "spec.resolved.yaml"
    Task("classify", spec, [f"train.resume={copy}"]).train()
    assert not any(path.exists() for path in stale)


def test_a_resolution_off_the_patch_grid_stops_before_the_run_folder(shapes, tmp_path, capsys) -> None:
    code, err = _cli(capsys, *_args(shapes, tmp_path / "runs", "model.resolution=40"))
    assert code == 2
    _one_error_line(err, "model.resolution 40 is not a multiple of 16", "use 32 or 48")
    assert not (tmp_path / "runs").exists()


def test_truncated_images_are_listed_and_left_out_before_training(tmp_path, capsys) -> None:
    data = make_shapes_dataset(tmp_path / "data", {"train": 3, "val": 2}, size=32)
    victim = next((data / "train" / "red_circle").iterdir())
    good = Image.open(victim).convert("RGB")
    jpeg = victim.with_suffix(".jpg")
    good.save(jpeg, quality=95)
    victim.unlink()
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])  # a truncated JPEG: the header still reads
    result = Task(
        "classify",
        None,
        [f"dataset.root={data}", f"results_dir={tmp_path / 'runs'}", *TINY, "train.epochs=1", "model.mode=finetune"],
    ).train()
    out = capsys.readouterr().out
    assert "left out of train: 1 of 12 images (unreadable" in out and jpeg.name in out
    assert result.best_checkpoint.is_file()
    recorded = json.loads((result.run_dir / "left_out.json").read_text())
    assert [(item["split"], Path(item["path"]).name, item["kind"]) for item in recorded] == [
        ("train", jpeg.name, "unreadable")
    ]


def test_truncated_segmentation_images_are_left_out(tmp_path, capsys) -> None:
    data = make_segmentation_dataset(tmp_path / "seg", {"train": 3, "val": 1}, size=32)
    victim = data / "images" / "train" / "001.png"
    victim.write_bytes(victim.read_bytes()[:200])
    palette = "[{name: a, id: 0}, {name: b, id: 1}, {name: c, id: 2}]"
    result = Task(
        "segment",
        None,
        [
            f"dataset.root={data}",
            f"dataset.palette={palette}",
            f"results_dir={tmp_path / 'runs'}",
            *TINY,
            "train.epochs=1",
            "model.neck=simple_pyramid",
            "model.neck_channels=16",
            "model.decoder_channels=16",
        ],
    ).train()
    out = capsys.readouterr().out
    assert "left out of train: 1 of 3 image-mask pairs (unreadable" in out and "001.png" in out
    assert result.best_checkpoint.is_file()


def test_predict_with_every_image_unreadable_is_exit_2_and_writes_nothing(run, shapes, tmp_path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    out = tmp_path / "preds.csv"
    code, err = _cli(
        capsys,
        "classify",
        "predict",
        f"dataset.root={shapes}",
        f"predict.checkpoint={run.run_dir}",
        f"predict.source={broken}",
        f"predict.out={out}",
    )
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: predict.source")
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_results_folder_is_one_line(shapes, tmp_path, capsys) -> None:
    results = tmp_path / "ro"
    results.mkdir()
    results.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, err = _cli(capsys, *_args(shapes, results))
    finally:
        results.chmod(stat.S_IRWXU)
    assert code == 2
    _one_error_line(err, "cannot write", str(results))


def test_predict_out_that_is_a_folder_is_one_line(run, shapes, tmp_path, capsys) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, err = _cli(
        capsys,
        "classify",
        "predict",
        f"dataset.root={shapes}",
        f"predict.checkpoint={run.run_dir}",
        f"predict.source={shapes / 'val'}",
        f"predict.out={folder}",
    )
    assert code == 2
    _one_error_line(err, "cannot write", "a-folder")
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".*.tmp"))
