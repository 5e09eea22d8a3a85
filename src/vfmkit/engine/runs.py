"""Pieces every task's ``train`` shares: the run folder (new or resumed), data loaders, resume epochs."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from pydantic import BaseModel
from torch.utils.data import DataLoader

from vfmkit.engine.checkpoint import AtomicCheckpoint
from vfmkit.engine.resume import check_resume
from vfmkit.engine.run_dir import create_run_dir, write_environment, write_resolved_spec
from vfmkit.engine.trainer import build_trainer
from vfmkit.errors import VfmError
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


def make_loader(dataset, batch_size: int, workers: int, sampler=None) -> DataLoader:
    """A DataLoader with persistent workers when there are any (no shuffle: pass an epoch-seeded sampler)."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, persistent_workers=workers > 0
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
    headline: str,
) -> AtomicCheckpoint:
    """Fit ``module`` with the spec's trainer; ``headline`` (maximised) picks the best checkpoint when there is
    validation data, else the training loss (minimised). Returns the checkpoint callback (best/last paths)."""
    if resume_from is not None:
        set_loader_epoch(train_loader, resumed_epoch(resume_from))
    monitor, mode = (headline, "max") if val_loader is not None else ("train/loss_epoch", "min")
    trainer, checkpoints = build_trainer(spec.train, run_dir, monitor, mode)
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from, weights_only=True)
    return checkpoints


def copy_trained_weights(model: torch.nn.Module, trained: torch.nn.Module, source: Path) -> None:
    """``train.init_from``: start from a trained model's weights (same architecture), with a new schedule.

    Raises:
        VfmError: the checkpoint's model does not fit this spec's model.
    """
    try:
        model.load_state_dict(trained.state_dict())
    except RuntimeError as err:
        detail = str(err).splitlines()[0][:300]
        raise VfmError(f"train.init_from {source}: its model does not match this spec's model ({detail})") from None
