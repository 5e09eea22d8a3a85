"""kill -9 of `vfm embed --out FOLDER` at a random moment, then the same command again: the finished folder equals an
uninterrupted run, row for row and path for path (one seed by default, more under -m slow)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT
from tests.features.test_sharded_embed import MODEL, assert_same_rows, embed, make_images

from vfmkit.features.reader import open_embeddings

SHARDS = 41  # 160 images and a corrupt file, 4 items per shard


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("kill") / "images", 160, seed=3, broken=(10,))


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory) -> Path:
    return embed(images, tmp_path_factory.mktemp("reference") / "emb", batch_size=2).out


def _command(images: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "vfmkit.cli", "embed", str(images), "-m", MODEL, "-r", "32", "--what", "both",
            "--out", str(out), "--shard-size", "4", "-b", "2"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}


def _kill_at_random(images: Path, out: Path, seed: int) -> int:
    """Start the command, wait for a random number of shards plus a random delay, kill -9 its process group; the
    number of complete shards it left."""
    rng = random.Random(seed)
    wanted, delay = rng.randint(1, 12), rng.uniform(0.0, 0.1)
    process = subprocess.Popen(
        _command(images, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if len(list(out.glob("part-*.parquet"))) >= wanted:
            time.sleep(delay)
            break
        time.sleep(0.01)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return len(list(out.glob("part-*.parquet")))


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_kill_9_at_a_random_moment_then_rerun(seed: int, images: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    left = _kill_at_random(images, out, seed)
    assert left < SHARDS, "the run finished before the kill; make the data larger"
    finished = subprocess.run(_command(images, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"{SHARDS - left} written, {left} already complete" in finished.stdout
    assert_same_rows(out, reference)
    assert len(open_embeddings(out).skipped) == 1
