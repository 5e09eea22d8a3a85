"""Checkpoints written atomically (a kill during a save never leaves a corrupt file): ``last.ckpt`` every epoch,
``best.ckpt`` when the monitored metric improves, always consistent with each other whenever a kill happens."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import lightning.pytorch as pl


class AtomicCheckpoint(pl.Callback):
    """Save ``<dirpath>/last.ckpt`` at the end of every training epoch and ``best.ckpt`` on improvement.

    Each file is written to a temporary name in the same folder and renamed into place.

    Args:
        dirpath: checkpoint folder.
        monitor: metric in ``trainer.callback_metrics`` (e.g. ``val/top1``).
        mode: ``max`` or ``min``.
    """

    def __init__(self, dirpath: Path, monitor: str, mode: str = "max"):
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.ckpt"

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metric = trainer.callback_metrics.get(self.monitor)
        value = float(metric) if metric is not None else float("nan")
        improved, previous = self._improved(value), (self.best, self.best_epoch)
        # while the metric has never been defined (e.g. AP on a val split without boxes), best.ckpt is the latest
        undefined_so_far = self.best is None and not improved
        if improved or undefined_so_far:
            self.best_epoch = trainer.current_epoch  # before saving: the checkpoint records it
            self.best = value if improved else None
        if undefined_so_far and trainer.is_global_zero and trainer.current_epoch == 0:
            print(f"{self.monitor} is undefined on this validation data: best.ckpt is the latest epoch until it is not")
        try:
            self._save(trainer, improved or undefined_so_far)
        except BaseException:
            self.best, self.best_epoch = previous
            raise

    def _save(self, trainer: pl.Trainer, improved: bool) -> None:
        """Write the checkpoint once to a temporary file, then put it in place as ``best.ckpt`` (when improved)
        BEFORE ``last.ckpt``: a kill between the two renames leaves the previous ``last.ckpt``, so the resumed run
        repeats this epoch exactly and finds ``best.ckpt`` already consistent with it."""
        self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / ".last.ckpt.tmp"
        try:
            trainer.save_checkpoint(tmp, weights_only=False)
            if trainer.is_global_zero:
                if improved:
                    best_tmp = self.dirpath / ".best.ckpt.tmp"
                    shutil.copyfile(tmp, best_tmp)
                    os.replace(best_tmp, self.best_path)
                os.replace(tmp, self.last_path)
        except BaseException:
            for leftover in (tmp, self.dirpath / ".best.ckpt.tmp"):
                leftover.unlink(missing_ok=True)  # the previous checkpoints, if any, are untouched
            raise
        trainer.strategy.barrier("atomic_checkpoint")

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "monitor": self.monitor, "mode": self.mode}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best")
        self.best_epoch = state_dict.get("best_epoch")
