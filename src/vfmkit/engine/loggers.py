"""Experiment trackers beside ``metrics.csv``: ``train.loggers: [csv, tensorboard, wandb, mlflow]``.

``csv`` is vfmkit's own ``metrics.csv`` (always written). The others are Lightning's loggers, writing into the run
folder and offline by default (wandb: ``WANDB_MODE`` decides, default offline; mlflow: a file store under the run
folder unless ``MLFLOW_TRACKING_URI`` is set). Each needs its package, installed with the extra of the same name.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from lightning.pytorch.loggers import Logger

from vfmkit.errors import ConfigurationError

PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


def check_loggers(names: list[str]) -> None:
    """Refuse trackers whose package is not installed (before a run folder exists).

    Raises:
        ConfigurationError: naming the tracker and the extra to install.
    """
    for name in dict.fromkeys(names):
        if name != "csv" and not any(importlib.util.find_spec(package) for package in PACKAGES[name]):
            raise ConfigurationError(
                f"train.loggers: {name!r} needs the {PACKAGES[name][0]} package: pip install 'vfmkit[{name}]' "
                "(or remove it from train.loggers)"
            )


def build_loggers(names: list[str], run_dir: Path, task: str) -> list[Logger]:
    """Lightning loggers for every name but ``csv`` (see :func:`check_loggers` for the errors)."""
    check_loggers(names)
    return [_make(name, Path(run_dir), task) for name in dict.fromkeys(names) if name != "csv"]


def _make(name: str, run_dir: Path, task: str) -> Logger:
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    if name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        offline = os.environ.get("WANDB_MODE", "offline") == "offline"
        return WandbLogger(save_dir=str(run_dir), project=f"vfmkit-{task}", name=run_dir.name, offline=offline)
    from lightning.pytorch.loggers import MLFlowLogger

    uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
    return MLFlowLogger(experiment_name=f"vfmkit-{task}", run_name=run_dir.name, tracking_uri=uri)
