"""Pieces every task's ``train`` shares: the run folder (new or resumed), data loaders, resume epochs."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from pydantic import BaseModel
from torch.utils.data import DataLoader

from vfmkit.data.augment import sample_seed
from vfmkit.engine.checkpoint import AtomicCheckpoint
from vfmkit.engine.resume import check_resume
from vfmkit.engine.run_dir import create_run_dir, write_environment, write_resolved_spec
from vfmkit.engine.trainer import build_trainer
from vfmkit.weights.safe_load import load_pickle_checkpoint


def prepare_run(spec: BaseModel, task: str) -> tuple[Path, Path | None]:
    """The run folder and, when resuming, the checkpoint to continue from.

    A new run gets ``<results_dir>/<task>/<name>[N]`` with ``spec.resolved.yaml`` and ``env.json``; a resumed run
    reuses its folder after :func:`~vfmkit.engine.resume.check_resume` checked the spec is unchanged.
    """
    if spec.train.resume is not None:
        run_dir, checkpoint = check_resume(spec)
        print(f"resuming {run_dir} from {checkpoint}")
        return run_dir, checkpoint
    run_dir = create_run_dir(spec.results_dir, task, spec.name, spec.exist_ok)
    write_resolved_spec(run_dir, spec)
    write_environment(run_dir, spec.train.seed)
    return run_dir, None


def make_loader(dataset, batch_size: int, workers: int, sampler=None, seed: int = 0, collate_fn=None) -> DataLoader:
    """A DataLoader with persistent workers when there are any (no shuffle: pass an epoch-seeded sampler).

    It owns a generator seeded from ``seed``: creating its iterators (at the start of a run, and again when a run
    resumes) never draws from the global torch RNG, whose stream drives dropout and must continue exactly on resume.
    Samples are augmented from ``(seed, epoch, index)`` seeds, so what a worker serves does not depend on its RNG.
    """
    generator = torch.Generator().manual_seed(sample_seed(seed, 0, 0, stream="loader"))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=generator,
        collate_fn=collate_fn,
    )


def resumed_epoch(checkpoint: Path) -> int:
    """The epoch a resumed fit starts with (checkpoints are written at the end of an epoch)."""
    payload = load_pickle_checkpoint(checkpoint)
    return int(payload.get("epoch", -1)) + 1


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the sampler's epoch before Lightning does: worker prefetching starts before its own ``set_epoch``."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def fit(
    spec: BaseModel,
    run_dir: Path,
    module: pl.LightningModule,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    resume_from: Path | None,
    monitor: str,
    mode: str = "max",
) -> AtomicCheckpoint:
    """Fit ``module`` with the spec's trainer; ``monitor`` (``mode`` max/min) picks the best checkpoint when there is
    validation data, else the training loss (minimised). Returns the checkpoint callback (best/last paths)."""
    if resume_from is not None:
        set_loader_epoch(train_loader, resumed_epoch(resume_from))
    if val_loader is None:
        monitor, mode = "train/loss_epoch", "min"
    trainer, checkpoints = build_trainer(spec.train, run_dir, monitor, mode)
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from, weights_only=True)
    return checkpoints
