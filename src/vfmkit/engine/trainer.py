"""Lightning Trainer wiring from a :class:`~vfmkit.spec.base.TrainSpec`: precision, devices, nodes, strategy,
gradient clipping, determinism, progress display and the run-folder callbacks."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

from vfmkit.engine.callbacks import EMA, MetricsCsv, PlainProgress
from vfmkit.engine.checkpoint import AtomicCheckpoint
from vfmkit.engine.loggers import build_loggers
from vfmkit.errors import VfmError
from vfmkit.spec.base import TrainSpec

QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*module\\(s\\) in eval mode.*",
    ".*LeafSpec.*is deprecated.*",
    ".*validation_step` but have no `val_dataloader.*",  # runs without a val split: the preflight says so already
    ".*distributed.nn.functional.all_gather is deprecated.*",  # inside Lightning's all_gather
)
"""Lightning warnings about choices vfmkit makes on purpose; they would only confuse users."""


def _accelerator(spec: TrainSpec) -> str:
    if spec.accelerator == "gpu" and not torch.cuda.is_available():
        raise VfmError("train.accelerator is 'gpu' but no CUDA device is visible; use 'cpu' or 'auto'")
    if spec.precision == "16-mixed" and not torch.cuda.is_available():
        raise VfmError("train.precision '16-mixed' needs a GPU; on CPU use '32' or 'bf16-mixed'")
    return spec.accelerator


def build_trainer(
    spec: TrainSpec,
    run_dir: Path,
    monitor: str,
    mode: str = "max",
    extra_callbacks: list[pl.Callback] | None = None,
    task: str = "task",
) -> tuple[pl.Trainer, AtomicCheckpoint]:
    """A Trainer that writes checkpoints, metrics.csv and plots into ``run_dir``.

    Returns:
        The trainer and its checkpoint callback (``best_path`` / ``last_path``).
    """
    checkpoint = AtomicCheckpoint(Path(run_dir) / "checkpoints", monitor=monitor, mode=mode)
    # the metrics row of an epoch is made before the checkpoint is written, so the checkpoint carries it
    callbacks: list[pl.Callback] = [MetricsCsv(run_dir), checkpoint]
    interactive = sys.stdout.isatty()  # progress bars in a terminal, plain periodic lines in logs
    if not interactive:
        callbacks.append(PlainProgress())
    if spec.ema.enabled:
        callbacks.append(EMA(spec.ema.decay))
    callbacks += extra_callbacks or []
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    trainer = pl.Trainer(
        accelerator=_accelerator(spec),
        devices=spec.devices,
        num_nodes=spec.num_nodes,
        strategy=spec.strategy,
        precision=spec.precision,
        max_epochs=spec.epochs,
        gradient_clip_val=spec.grad_clip,
        deterministic=spec.deterministic,
        check_val_every_n_epoch=spec.val_every,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # vfmkit's samplers shard themselves (exact, resumable, no padded val)
        logger=build_loggers(spec.loggers, Path(run_dir), task) or False,
        enable_checkpointing=False,
        enable_progress_bar=interactive,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        callbacks=callbacks,
    )
    return trainer, checkpoint
