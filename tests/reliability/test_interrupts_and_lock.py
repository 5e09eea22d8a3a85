"""Ctrl-C at every stage of `vfm` and the run lock after kill -9, in real processes.

- D12: a real SIGINT while the console script is still importing, and during the preflight of a training (before
  the first epoch), gives "interrupted" on stderr and exit code 130, never a traceback or a silent 130.
- N11: the run lock is a POSIX record lock, not inherited by the forked DataLoader workers, so the run folder is
  free the moment the trainer is killed, while its workers still live; the resume succeeds at once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT
from tests.reliability.helpers import cli_env
from tests.synthetic import make_shapes_dataset

from vfmkit.engine.lock import RunLock
from vfmkit.errors import VfmError

TINY = ["model.backbone=test-radio-v2-tiny", "model.resolution=32", "train.batch_size=4"]

# Runs the console script's entry point (read from pyproject.toml) and sends this process a real SIGINT the moment
# `torch` starts to be imported, i.e. while the CLI is still importing.
DURING_IMPORTS = textwrap.dedent(
    """
    import importlib, os, signal, sys, time
    module, function = sys.argv[1].split(":")

    class CtrlC:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the signal's KeyboardInterrupt is raised here
            return None

    sys.meta_path.insert(0, CtrlC())
    sys.argv = ["vfm", *sys.argv[2:]]
    getattr(importlib.import_module(module), function)()
    """
)

# Sends this process a real SIGINT while `vfm <task> train` builds its model (after the preflight, before any epoch).
DURING_PREFLIGHT = textwrap.dedent(
    """
    import importlib, os, signal, sys, time
    train = importlib.import_module("vfmkit.engine.train")
    original = train.build_for_training

    def build_then_ctrl_c(*args, **kwargs):
        model = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        return model

    train.build_for_training = build_then_ctrl_c
    from vfmkit.cli.entry import main
    sys.argv = ["vfm", *sys.argv[1:]]
    main()
    """
)


# Takes the run lock of the folder argv[1], forks a child that sleeps, prints the child's pid, and waits to be killed.
FORK_AND_WAIT = textwrap.dedent(
    """
    import importlib.util, os, sys, time
    from pathlib import Path
    import vfmkit
    # engine/lock.py alone: importing the vfmkit.engine package would import Lightning (seconds)
    spec = importlib.util.spec_from_file_location("lock", Path(vfmkit.__file__).parent / "engine" / "lock.py")
    lock_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_module)
    lock = lock_module.RunLock(Path(sys.argv[1])).acquire()
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
    """
)


def _console_script() -> str:
    """The ``vfm`` entry point as pyproject.toml declares it, e.g. ``vfmkit.cli.entry:main``."""
    match = re.search(r'^vfm = "([\w.]+:\w+)"$', (REPO_ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, "no vfm console script in pyproject.toml"
    return match.group(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), {"train": 4, "val": 2}, size=32)


def test_ctrl_c_while_the_cli_imports_is_interrupted_130() -> None:
    done = subprocess.run(
        [sys.executable, "-c", DURING_IMPORTS, _console_script(), "models"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (130, "interrupted\n"), done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_ctrl_c_before_the_first_epoch_is_interrupted_130(data, tmp_path) -> None:
    args = ["classify", "train", f"dataset.root={data}", f"results_dir={tmp_path}", *TINY, "train.num_workers=0"]
    done = subprocess.run(
        [sys.executable, "-c", DURING_PREFLIGHT, *args], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["interrupted"], done.stderr
    assert "images per class and split" in done.stdout  # the preflight ran


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_owner_frees_the_lock_while_its_forked_children_live(tmp_path) -> None:
    """N11's mechanism in a second: a process takes the lock, forks a child (as DataLoader workers are forked) and
    is killed; the child lives on, the lock is free at once."""
    owner = subprocess.Popen(
        [sys.executable, "-c", FORK_AND_WAIT, str(tmp_path)],
        env=cli_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(owner.stdout.readline())  # printed once the lock is held and the child forked
        with pytest.raises(VfmError, match=f"in use by another training \\(pid {owner.pid}\\)"):
            RunLock(tmp_path).acquire()  # a live owner is named
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        os.kill(child, 0)  # the forked child still lives
        RunLock(tmp_path).acquire().release()
    finally:
        if _alive(owner.pid):
            os.killpg(owner.pid, signal.SIGKILL)
        owner.stdout.close()


@pytest.mark.slow
def test_kill_9_with_dataloader_workers_then_an_immediate_resume(data, tmp_path) -> None:
    """N11: with flock, the forked workers kept the lock for up to 5 s after kill -9 and a resume was refused with
    the dead trainer's pid."""
    args = [f"dataset.root={data}", f"results_dir={tmp_path}", *TINY, "train.num_workers=2", "train.epochs=3"]
    command = [sys.executable, "-m", "vfmkit.cli.main", "classify", "train", *args, "model.mode=finetune"]
    trainer = subprocess.Popen(
        command,
        env=cli_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = tmp_path / "classify" / "exp"
    try:
        while not (run / "checkpoints" / "last.ckpt").exists() and trainer.poll() is None:
            time.sleep(0.02)
        assert trainer.poll() is None, "the training ended before its first checkpoint"
        os.kill(trainer.pid, signal.SIGKILL)  # the trainer only, as the OOM killer does
        trainer.wait()
        assert _alive(trainer.pid)  # its DataLoader workers still live (they notice the parent's death later)
        RunLock(run).acquire().release()  # the moment after the kill: free
        resumed = subprocess.run(
            [*command, f"train.resume={run}"],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if _alive(trainer.pid):
            os.killpg(trainer.pid, signal.SIGKILL)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run}" in resumed.stdout
