"""Run-folder callbacks: ``metrics.csv`` per epoch, PNG curves, plain progress lines when not in a terminal, EMA."""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from vfmkit.engine.plots import plot_curves
from vfmkit.engine.taskdef import format_metric


def _scalar(value) -> float:
    return float(value.detach().cpu()) if isinstance(value, torch.Tensor) else float(value)


class MetricsCsv(pl.Callback):
    """One row per epoch in ``metrics.csv``: epoch, every logged epoch metric, lr, seconds; curves in ``plots/``.

    Metrics are fractions as logged by the tasks; an undefined one (NaN) is an empty cell and a gap in the curves.

    On resume, rows of epochs that will be re-run are dropped and the file is continued.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.csv"
        self.plot_dir = Path(run_dir) / "plots"
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning restored the loops of a resumed run, so current_epoch is the epoch to run next
        if self.path.exists() and trainer.is_global_zero:
            rows = [r for r in self._read() if int(r["epoch"]) < trainer.current_epoch]
            self._write(rows)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"epoch": trainer.current_epoch}
        for key, value in sorted(trainer.callback_metrics.items()):
            if not key.endswith("_step"):
                number = _scalar(value)  # undefined metrics (NaN) are empty cells
                row[key.removesuffix("_epoch")] = round(number, 6) if math.isfinite(number) else ""
        row["lr"] = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        row["seconds"] = round(time.perf_counter() - self._start, 2)
        self._write([*self._read(), row])
        plot_curves(self._read(), self.plot_dir)

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def _write(self, rows: list[dict]) -> None:
        fields: list[str] = []
        for row in rows:
            fields += [k for k in row if k not in fields]
        tmp = self.path.with_name(".metrics.csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)


class PlainProgress(pl.Callback):
    """Periodic plain log lines (for logs and CI, where progress bars would be noise)."""

    def __init__(self, every_seconds: float = 30.0, stream=None):
        self.every = every_seconds
        self.stream = stream or sys.stdout
        self._last = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every and trainer.is_global_zero:
            self._last = now
            loss = trainer.callback_metrics.get("train/loss_step")
            loss_text = f" loss {_scalar(loss):.4f}" if loss is not None else ""
            total = trainer.num_training_batches
            epoch = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
            self._print(f"{epoch} step {batch_idx + 1}/{total}{loss_text}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if not k.endswith(("_step", "_epoch"))}
        text = "  ".join(f"{k} {format_metric(k, v)}" for k, v in sorted(metrics.items()))
        self._print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done: {text}")


class EMA(pl.Callback):
    """Exponential moving average of the trainable weights; validation and checkpoints' ``ema`` use the average.

    Args:
        decay: per-step decay.
    """

    def __init__(self, decay: float):
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}
        self._backup: dict[str, torch.Tensor] = {}

    def _params(self, pl_module: pl.LightningModule) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.shadow:
            self.shadow = {n: p.detach().clone() for n, p in self._params(pl_module).items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        for name, param in self._params(pl_module).items():
            self.shadow[name].lerp_(param.detach(), 1 - self.decay)

    @torch.no_grad()
    def _swap(self, pl_module: pl.LightningModule) -> None:
        for name, param in self._params(pl_module).items():
            if name in self._backup:
                param.copy_(self._backup.pop(name))
            else:
                self._backup[name] = param.detach().clone()
                param.copy_(self.shadow[name])

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.shadow:
            self._swap(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._backup:
            self._swap(pl_module)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.shadow = dict(state_dict.get("shadow", {}))
