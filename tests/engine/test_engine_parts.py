"""Run folders, atomic checkpoints, metrics CSV, plots and model cards."""

from __future__ import annotations

import json

import pytest

from vfmkit.engine.plots import plot_confusion_matrix, plot_curves
from vfmkit.engine.resume import find_checkpoint, run_dir_of
from vfmkit.engine.run_dir import atomic_write_text, create_run_dir, environment
from vfmkit.errors import VfmError


def test_run_dirs_are_never_reused(tmp_path):
    first = create_run_dir(tmp_path, "classify", "exp")
    second = create_run_dir(tmp_path, "classify", "exp")
    third = create_run_dir(tmp_path, "classify", "exp")
    assert [p.name for p in (first, second, third)] == ["exp", "exp2", "exp3"]
    assert create_run_dir(tmp_path, "classify", "exp", exist_ok=True) == first


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "file.txt"
    atomic_write_text(path, "old")

    class Boom(Exception):
        pass

    def failing_replace(src, dst):
        raise Boom()

    monkeypatch.setattr("vfmkit.engine.run_dir.os.replace", failing_replace)
    with pytest.raises(Boom):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]  # no temporary left behind


def test_environment_records_versions_and_command():
    env = environment(seed=3)
    json.dumps(env)
    assert env["seed"] == 3 and env["versions"]["torch"] and env["command"]
    assert env["hardware"]["cpu_count"] >= 1


def test_find_checkpoint(tmp_path):
    run = tmp_path / "exp"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(VfmError, match="no checkpoints/best.ckpt"):
        find_checkpoint(run)
    (run / "checkpoints" / "last.ckpt").write_text("x")
    assert find_checkpoint(run).name == "last.ckpt"
    (run / "checkpoints" / "best.ckpt").write_text("x")
    assert find_checkpoint(run).name == "best.ckpt"
    assert find_checkpoint(run, prefer="last").name == "last.ckpt"
    assert run_dir_of(run / "checkpoints" / "best.ckpt") == run
    with pytest.raises(VfmError, match="checkpoint not found"):
        find_checkpoint(tmp_path / "nope")


def test_plots_are_png(tmp_path):
    rows = [{"epoch": "0", "train/loss": "1.0", "val/top1": "50"}, {"epoch": "1", "train/loss": "0.5", "val/top1": ""}]
    written = plot_curves(rows, tmp_path)
    assert {p.name for p in written} == {"loss.png", "metrics.png"}
    matrix = plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png")
    for path in [*written, matrix]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _FakeTrainer:
    """Just what AtomicCheckpoint uses; ``save_checkpoint`` writes part of a file and can die half-way."""

    sanity_checking = False
    is_global_zero = True

    def __init__(self, metric: float, die: bool, epoch: int = 0):
        import torch

        self.current_epoch = epoch
        self.callback_metrics = {"val/top1": torch.tensor(metric)}
        self.die = die
        self.strategy = type("Strategy", (), {"barrier": lambda self, name: None})()

    def save_checkpoint(self, path, weights_only=False):
        with open(path, "wb") as handle:
            handle.write(b"partial checkpoint bytes")
            if self.die:
                raise KeyboardInterrupt("killed during the save")
        with open(path, "ab") as handle:
            handle.write(b" complete")


def test_checkpoint_killed_during_save_leaves_the_previous_one(tmp_path):
    from vfmkit.engine.checkpoint import AtomicCheckpoint

    callback = AtomicCheckpoint(tmp_path, monitor="val/top1", mode="max")
    callback.on_train_epoch_end(_FakeTrainer(50.0, die=False), None)
    assert callback.last_path.read_bytes() == b"partial checkpoint bytes complete"
    assert callback.best_path.read_bytes() == b"partial checkpoint bytes complete"
    with pytest.raises(KeyboardInterrupt):
        callback.on_train_epoch_end(_FakeTrainer(60.0, die=True), None)
    assert callback.last_path.read_bytes() == b"partial checkpoint bytes complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
    callback.on_train_epoch_end(_FakeTrainer(40.0, die=False), None)  # worse: last updated, best kept
    assert callback.best == 50.0


def test_a_kill_between_the_best_and_last_renames_keeps_them_consistent(tmp_path, monkeypatch):
    """best.ckpt is put in place before last.ckpt: killed in between, last.ckpt is the previous epoch's (the resumed
    run repeats the epoch) and best.ckpt already holds the improved epoch, never a stale or missing best."""
    import os

    from vfmkit.engine.checkpoint import AtomicCheckpoint

    callback = AtomicCheckpoint(tmp_path, monitor="val/top1", mode="max")
    callback.on_train_epoch_end(_FakeTrainer(0.5, die=False, epoch=0), None)
    real_replace = os.replace

    def killed_before_last(src, dst):
        if str(dst).endswith("last.ckpt"):
            raise KeyboardInterrupt("killed between the renames")
        real_replace(src, dst)

    monkeypatch.setattr("vfmkit.engine.checkpoint.os.replace", killed_before_last)
    (tmp_path / "last.ckpt").write_bytes(b"epoch 0")
    with pytest.raises(KeyboardInterrupt):
        callback.on_train_epoch_end(_FakeTrainer(0.6, die=False, epoch=1), None)
    assert (tmp_path / "last.ckpt").read_bytes() == b"epoch 0"  # the resumed run repeats epoch 1
    assert (tmp_path / "best.ckpt").read_bytes() == b"partial checkpoint bytes complete"  # epoch 1, already in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary left


def test_best_is_the_latest_epoch_while_the_metric_is_undefined(tmp_path, capsys):
    """AP of a val split without boxes is undefined every epoch: best.ckpt must still exist (the latest epoch) so the
    run can be evaluated; the first defined value takes over and only improvements replace it."""
    from vfmkit.engine.checkpoint import AtomicCheckpoint

    callback = AtomicCheckpoint(tmp_path, monitor="val/top1", mode="max")
    callback.on_train_epoch_end(_FakeTrainer(float("nan"), die=False, epoch=0), None)
    assert callback.best_path.is_file() and callback.best is None and callback.best_epoch == 0
    assert "val/top1 is undefined on this validation data" in capsys.readouterr().out
    callback.on_train_epoch_end(_FakeTrainer(float("nan"), die=False, epoch=1), None)
    assert callback.best_epoch == 1
    callback.on_train_epoch_end(_FakeTrainer(0.3, die=False, epoch=2), None)
    callback.on_train_epoch_end(_FakeTrainer(float("nan"), die=False, epoch=3), None)
    assert (callback.best, callback.best_epoch) == (pytest.approx(0.3), 2)
