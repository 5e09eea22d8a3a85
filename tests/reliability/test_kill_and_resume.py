"""Kills and signals in real `vfm classify train` processes (with DataLoader workers and dropout on), then
`train.resume`: the resumed run ends with the weights and every metrics row of an uninterrupted run.

- kill -9 at random moments after the first checkpoint (several seeds; one in the default suite, the rest slow);
- kill -9 in the middle of a checkpoint write, and (slow) between the ``best.ckpt`` and ``last.ckpt`` renames;
- SIGTERM (schedulers, `docker stop`): exit 143 with how to resume; (slow) Ctrl-C (SIGINT): exit 130, the same line.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tests.synthetic import make_shapes_dataset

from vfmkit.weights.safe_load import load_pickle_checkpoint

ARGS = [
    "model.backbone=test-radio-v2-tiny",
    "model.resolution=32",
    "model.mode=finetune",
    "model.head_dropout=0.3",
    "train.num_workers=2",
    "train.batch_size=4",
    "train.epochs=3",
    "train.ema.enabled=true",
]

# Runs `vfm` after patching the checkpoint writes so the process SIGKILLs itself at one chosen point.
HARNESS = textwrap.dedent(
    """
    import os, signal, sys
    from lightning.fabric.plugins.io import torch_io
    import vfmkit.engine.checkpoint as checkpoint
    where, epoch = os.environ["VFMKIT_TEST_KILL"].split(":")
    original_save, original_replace = torch_io._atomic_save, os.replace
    state = {"saves": 0}

    def save(obj, path, *args, **kwargs):
        if where == "mid-write" and str(path).endswith(".last.ckpt.tmp") and obj.get("epoch") == int(epoch):
            with open(path, "wb") as handle:
                handle.write(b"PK half a checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)
        return original_save(obj, path, *args, **kwargs)

    def replace(src, dst):
        if where == "between-renames" and str(dst).endswith("last.ckpt"):
            state["saves"] += 1
            if state["saves"] == int(epoch) + 1:
                os.kill(os.getpid(), signal.SIGKILL)
        return original_replace(src, dst)

    torch_io._atomic_save = save
    checkpoint.os.replace = replace
    from vfmkit.cli.main import main
    main(sys.argv[1:])
    """
)


def _command(data: Path, results: Path, *extra: str, harness: bool = False) -> list[str]:
    head = [sys.executable, "-c", HARNESS] if harness else [sys.executable, "-m", "vfmkit.cli.main"]
    return [*head, "classify", "train", f"dataset.root={data}", f"results_dir={results}", *ARGS, *extra]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def _finish(data: Path, results: Path) -> subprocess.CompletedProcess:
    """Resume the run under ``results`` (from its last checkpoint) to the end."""
    run = results / "classify" / "exp"
    return subprocess.run(
        _command(data, results, f"train.resume={run}"), capture_output=True, text=True, timeout=600, env=_env()
    )


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_pickle_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


def _rows(run: Path) -> list[dict]:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _assert_same_run(got: Path, expected: Path) -> None:
    reference, weights = _weights(expected), _weights(got)
    assert reference.keys() == weights.keys()
    for key in reference:
        torch.testing.assert_close(weights[key], reference[key], rtol=0, atol=1e-6, msg=key)
    assert _rows(got) == _rows(expected)
    best = load_pickle_checkpoint(got / "checkpoints" / "best.ckpt")
    assert best["epoch"] == load_pickle_checkpoint(expected / "checkpoints" / "best.ckpt")["epoch"]
    assert not [p for p in got.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), {"train": 4, "val": 2}, size=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("reference")
    done = subprocess.run(_command(data, results), capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stderr[-2000:]
    return results / "classify" / "exp"


def _kill_at_random(data: Path, results: Path, seed: int, reference: Path) -> None:
    """Start a run, wait for its first checkpoint, then SIGKILL it (and its workers) a random moment later."""
    epoch_seconds = max(float(r["seconds"]) for r in csv.DictReader((reference / "metrics.csv").open()))
    process = subprocess.Popen(
        _command(data, results),
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = results / "classify" / "exp" / "checkpoints" / "last.ckpt"
    while not first.exists() and process.poll() is None:
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0, 1.5 * epoch_seconds))
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_kill_9_at_a_random_moment_then_resume(seed, data, reference, tmp_path) -> None:
    _kill_at_random(data, tmp_path, seed, reference)
    resumed = _finish(data, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same_run(tmp_path / "classify" / "exp", reference)


@pytest.mark.parametrize("where", ["mid-write", pytest.param("between-renames", marks=pytest.mark.slow)])
def test_kill_9_during_a_checkpoint_write_then_resume(where, data, reference, tmp_path) -> None:
    killed = subprocess.run(
        _command(data, tmp_path, harness=True),
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(VFMKIT_TEST_KILL=f"{where}:1"),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "classify" / "exp"
    assert load_pickle_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 0  # the epoch-0 checkpoint is intact
    resumed = _finish(data, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same_run(run, reference)


@pytest.mark.parametrize(
    ("sig", "code", "words"),
    [
        (signal.SIGTERM, 143, "stopped by SIGTERM"),
        pytest.param(signal.SIGINT, 130, "interrupted", marks=pytest.mark.slow),
    ],
)
def test_signals_stop_with_how_to_resume(sig, code, words, data, reference, tmp_path) -> None:
    process = subprocess.Popen(
        _command(data, tmp_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = tmp_path / "classify" / "exp" / "checkpoints" / "last.ckpt"
    while not first.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(sig)
    _, err = process.communicate(timeout=300)
    assert process.returncode == code, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(words) and f"train.resume={tmp_path / 'classify' / 'exp'}" in last
    assert "Traceback" not in err
    resumed = _finish(data, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same_run(tmp_path / "classify" / "exp", reference)
