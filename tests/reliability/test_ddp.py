"""Multi-process training on CPU (DDP over gloo) through the CLI, as a user runs it: one run folder (rank 0), the
validation metrics gathered from every process (equal to a single-process evaluation of the same checkpoint),
and a resumed DDP run that ends where an uninterrupted one does."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tests.synthetic import make_segmentation_dataset, make_shapes_dataset

from vfmkit import Task
from vfmkit.weights.safe_load import load_pickle_checkpoint

DDP = ["train.devices=2", "train.strategy=ddp", "train.accelerator=cpu", "train.num_workers=0", "train.epochs=2"]
PALETTE = "[{name: background, id: 0}, {name: circle, id: 1}, {name: square, id: 2}]"


def _command(task: str, data, results, *extra: str) -> list[str]:
    base = [f"results_dir={results}", "model.backbone=test-radio-v2-tiny", "model.resolution=32", "train.batch_size=4"]
    if task == "classify":
        base += [f"dataset.root={data}", "model.mode=finetune"]
    else:
        base += [
            f"dataset.root={data}",
            f"dataset.palette={PALETTE}",
            "model.neck=simple_pyramid",
            "model.neck_channels=16",
            "model.decoder_channels=16",
            "dataset.augment.scale_range=null",
        ]
    return [sys.executable, "-m", "vfmkit.cli.main", task, "train", *base, *DDP, *extra]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    make_shapes_dataset(root / "shapes", {"train": 4, "val": 3}, size=32)  # 12 val images: 6 per process
    make_segmentation_dataset(root / "seg", {"train": 6, "val": 3}, size=32)  # 3 val images: 2 + 1, no padding
    return root


@pytest.mark.parametrize("task", ["classify", pytest.param("segment", marks=pytest.mark.slow)])
def test_ddp_writes_one_run_folder_with_gathered_metrics(task, data, tmp_path) -> None:
    source = data / ("shapes" if task == "classify" else "seg")
    result = _run(_command(task, source, tmp_path / "runs"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs" / task).iterdir()] == ["exp"]  # rank 1 wrote no folder of its own
    assert "error" not in result.stderr.lower() and "sync_dist" not in result.stderr
    run = tmp_path / "runs" / task / "exp"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # rank 0 wrote each epoch once
    key = "top1" if task == "classify" else "miou"
    # the last epoch's validation (gathered from both processes) equals one process evaluating that checkpoint
    single = Task(task, run / "spec.resolved.yaml", [f"evaluate.checkpoint={run / 'checkpoints' / 'last.ckpt'}"])
    assert float(rows[-1][f"val/{key}"]) == pytest.approx(single.evaluate().metrics[key], abs=1e-6)


@pytest.mark.slow
def test_ddp_resume_after_a_kill_ends_with_the_same_weights(data, tmp_path) -> None:
    source = data / "shapes"
    assert _run(_command("classify", source, tmp_path / "a")).returncode == 0
    process = subprocess.Popen(
        _command("classify", source, tmp_path / "b"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = tmp_path / "b" / "classify" / "exp" / "checkpoints" / "last.ckpt"
    while not last.exists() and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # both ranks, right after the first checkpoint
    process.wait()
    assert load_pickle_checkpoint(last)["epoch"] == 0
    resumed = _run(_command("classify", source, tmp_path / "b", f"train.resume={last.parent.parent}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_pickle_checkpoint(tmp_path / "a" / "classify" / "exp" / "checkpoints" / "last.ckpt")["state_dict"]
    got = load_pickle_checkpoint(last)["state_dict"]
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
