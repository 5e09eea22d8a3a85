"""Universal training on two CPU processes (DDP over gloo) through the CLI: OneFormer's contrastive negatives are
gathered with their gradients, the mask-loss normaliser is averaged, and the validation metrics gathered from both
processes (PQ, mIoU, mask AP) equal a single-process evaluation of the same checkpoint."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from tests.tasks.contract_cases import UNIVERSAL
from tests.tasks.universal.universal_data import make_panoptic_dataset
from tests.tasks.universal.universal_helpers import panoptic_overrides

from vfmkit import Task

DDP = ["train.devices=2", "train.strategy=ddp", "train.accelerator=cpu", "train.num_workers=0", "train.epochs=2"]


@pytest.mark.slow
def test_ddp_validation_equals_one_process(tmp_path) -> None:
    root = make_panoptic_dataset(tmp_path / "data", {"train": 6, "val": 3}, size=32)  # val: 2 + 1 images
    args = [*panoptic_overrides(root), *UNIVERSAL, "model.backbone=test-radio-v2-tiny", "train.batch_size=2"]
    command = [sys.executable, "-m", "vfmkit.cli.main", "universal", "train", *args, *DDP]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*command, f"results_dir={tmp_path / 'runs'}"], capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "contrastive loss is inactive" not in result.stderr  # every step has negatives from the other process
    run = tmp_path / "runs" / "universal" / "exp"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and rows[-1]["train/loss_contrastive"] != ""
    single = Task("universal", run / "spec.resolved.yaml", [f"evaluate.checkpoint={run / 'checkpoints' / 'last.ckpt'}"])
    metrics = single.evaluate().metrics
    for key in ("pq", "miou", "mask_ap"):
        assert float(rows[-1][f"val/{key}"]) == pytest.approx(metrics[key], abs=1e-6), key
