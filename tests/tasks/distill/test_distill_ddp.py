"""Distillation on two CPU processes (DDP over gloo) through the CLI: the validation k-NN (summaries gathered from
both processes) and the teacher fidelity (sums gathered) equal a single-process evaluation of the same checkpoint."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from tests.tasks.contract_cases import CASES

from vfmkit import Task

DDP = ["train.devices=2", "train.strategy=ddp", "train.accelerator=cpu", "train.num_workers=0", "train.epochs=2"]


@pytest.mark.slow
def test_ddp_validation_equals_one_process(tmp_path) -> None:
    case = CASES[("distill", None)]
    args = [*case.data(tmp_path / "data"), *case.extra, "model.backbone=test-radio-v2-tiny", "model.pretrained=false"]
    command = [sys.executable, "-m", "vfmkit.cli.main", "distill", "train", *args, *DDP, "train.batch_size=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*command, f"results_dir={tmp_path / 'runs'}"], capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "distill" / "exp"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    single = Task("distill", run / "spec.resolved.yaml", [f"evaluate.checkpoint={run / 'checkpoints' / 'last.ckpt'}"])
    metrics = single.evaluate().metrics
    for key in ("knn_top1", "control_knn_top1", "tiny/summary_cosine", "tiny/feature_cosine"):
        assert float(rows[-1][f"val/{key}"]) == pytest.approx(metrics[key], abs=1e-5), key
