"""Pieces every task's ``train`` shares: the run folder (new or resumed), data loaders, resume epochs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from pydantic import BaseModel
from torch.utils.data import DataLoader

from vfmkit.data.augment import sample_seed
from vfmkit.data.sampling import ShardSampler
from vfmkit.engine.checkpoint import AtomicCheckpoint
from vfmkit.engine.lock import RunLock
from vfmkit.engine.resume import check_resume, find_checkpoint, run_dir_of
from vfmkit.engine.run_dir import create_run_dir, write_environment, write_resolved_spec
from vfmkit.engine.trainer import build_trainer
from vfmkit.errors import VfmError
from vfmkit.utils.folders import publish_output_folder
from vfmkit.weights.safe_load import load_pickle_checkpoint


def process_rank() -> int:
    """The global rank of this process in a multi-process run, from the environment (0 when alone or rank 0).

    Lightning's DDP launcher starts ranks > 0 by running the same command again with ``LOCAL_RANK`` (and
    ``NODE_RANK`` on other machines) set; torchrun and SLURM set ``RANK``.
    """
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name):
            return int(os.environ[name])
    return max(int(os.environ.get("LOCAL_RANK") or 0), int(os.environ.get("NODE_RANK") or 0))


@contextlib.contextmanager
def open_run(spec: BaseModel, task: str) -> Iterator[tuple[Path, Path | None]]:
    """The run folder (locked while the block runs) and, when resuming, the checkpoint to continue from.

    A new run gets ``<results_dir>/<task>/<name>[N]`` with ``spec.resolved.yaml`` and ``env.json``; a resumed run
    reuses its folder after :func:`~vfmkit.engine.resume.check_resume` checked the spec is unchanged. Stale
    temporary files of killed runs are removed. The folder is published as the command's output folder
    (:func:`vfmkit.utils.folders.publish_output_folder`) while the block runs. Ranks > 0 of a multi-process run
    use rank 0's folder (passed in ``VFMKIT_RUN_DIR``, or ``<name>`` itself with ``exist_ok``) and write nothing
    there themselves.

    Raises:
        VfmError: another training holds the folder, or a rank > 0 cannot tell rank 0's folder.
    """
    if process_rank() > 0:
        yield _follower_run_dir(spec, task), _resume_checkpoint(spec)
        return
    if spec.train.resume is not None:
        run_dir, checkpoint = check_resume(spec)
    else:
        run_dir, checkpoint = create_run_dir(spec.results_dir, task, spec.name, spec.exist_ok), None
    with RunLock(run_dir):
        _remove_stale_temporaries(run_dir)
        if checkpoint is None:
            write_resolved_spec(run_dir, spec)
            write_environment(run_dir, spec.train.seed)
        else:
            print(f"resuming {run_dir} from {checkpoint}")
        os.environ[RUN_DIR_VARIABLE] = str(run_dir)  # for the ranks > 0 the DDP launcher starts
        try:
            with publish_output_folder(run_dir):  # an unexpected failure leaves its traceback.txt here (CLI)
                yield run_dir, checkpoint
        finally:
            os.environ.pop(RUN_DIR_VARIABLE, None)


RUN_DIR_VARIABLE = "VFMKIT_RUN_DIR"


def _resume_checkpoint(spec: BaseModel) -> Path | None:
    return None if spec.train.resume is None else find_checkpoint(spec.train.resume, prefer="last")


def _follower_run_dir(spec: BaseModel, task: str) -> Path:
    if os.environ.get(RUN_DIR_VARIABLE):
        return Path(os.environ[RUN_DIR_VARIABLE])
    if spec.train.resume is not None:
        return run_dir_of(find_checkpoint(spec.train.resume, prefer="last"))
    if spec.exist_ok:
        return Path(spec.results_dir) / task / spec.name
    raise VfmError(
        "multi-node training: the processes of other machines cannot tell the run folder of rank 0; set "
        "exist_ok=true (every process then writes to <results_dir>/<task>/<name>)"
    )


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed process left (``.last.ckpt.tmp``, ``.metrics.csv.*.tmp`` ...): never valid data."""
    for leftover in Path(run_dir).rglob(".*.tmp"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def make_loader(dataset, batch_size: int, workers: int, sampler=None, seed: int = 0, collate_fn=None) -> DataLoader:
    """A DataLoader with persistent workers when there are any (no shuffle: pass an epoch-seeded sampler; the
    default is a :class:`~vfmkit.data.sampling.ShardSampler`, in order, split over the processes of a distributed
    run).

    It owns a generator seeded from ``seed``: creating its iterators (at the start of a run, and again when a run
    resumes) never draws from the global torch RNG, whose stream drives dropout and must continue exactly on resume.
    Samples are augmented from ``(seed, epoch, index)`` seeds, so what a worker serves does not depend on its RNG.
    """
    generator = torch.Generator().manual_seed(sample_seed(seed, 0, 0, stream="loader"))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler if sampler is not None else ShardSampler(len(dataset)),
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=generator,
        collate_fn=collate_fn,
    )


def make_eval_loader(dataset, batch_size: int, collate_fn=None) -> DataLoader:
    """A plain in-order loader for evaluation outside a fit (every sample, in this process, even when a distributed
    fit left its process group behind)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_fn)


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
    trainer, checkpoints = build_trainer(spec.train, run_dir, monitor, mode, task=getattr(spec, "task", "task"))
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from, weights_only=True)
    except SIGTERMException:
        raise Interrupted("stopped by SIGTERM", 143, run_dir, checkpoints.last_path) from None
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown
            raise Interrupted("interrupted", 130, run_dir, checkpoints.last_path) from None
        raise
    return checkpoints


class Interrupted(VfmError):
    """Training stopped by a signal (Ctrl-C: exit 130; SIGTERM, e.g. from a scheduler or `docker stop`: exit 143).

    Every finished epoch is in ``checkpoints/last.ckpt``; the message says how to continue from it.
    """

    def __init__(self, what: str, exit_code: int, run_dir: Path, last: Path):
        self.exit_code = exit_code
        if last.is_file():
            epoch = int(load_pickle_checkpoint(last).get("epoch", -1)) + 1
            hint = f"{epoch} epoch(s) done; resume with train.resume={run_dir} (same spec)"
        else:
            hint = f"no epoch finished, so there is nothing to resume in {run_dir}; start again"
        super().__init__(f"{what}; {hint}")
