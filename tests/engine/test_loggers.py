"""Experiment trackers: tensorboard writes its events inside the run folder; a tracker whose package is missing is
one error line naming the extra to install, before any run folder exists."""

from __future__ import annotations

import importlib.util

import pytest
from tests.synthetic import make_shapes_dataset

from vfmkit import Task
from vfmkit.errors import ConfigurationError

TINY = [
    "model.backbone=test-radio-v2-tiny",
    "model.resolution=32",
    "train.num_workers=0",
    "train.batch_size=4",
    "model.mode=finetune",
    "train.epochs=1",
]


def test_tensorboard_events_go_into_the_run_folder(tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard comes with the dev extra")
    data = make_shapes_dataset(tmp_path / "data", {"train": 2, "val": 1}, size=32)
    result = Task(
        "classify",
        None,
        [f"dataset.root={data}", f"results_dir={tmp_path / 'runs'}", *TINY, "train.loggers=[csv, tensorboard]"],
    ).train()
    events = list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (result.run_dir / "metrics.csv").is_file()


def test_a_missing_tracker_names_the_extra(tmp_path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    data = make_shapes_dataset(tmp_path / "data", {"train": 2, "val": 1}, size=32)
    with pytest.raises(
        ConfigurationError,
        match=r"train.loggers: 'wandb' needs the wandb package: pip install "
        r"'vfmkit\[wandb\]'",
    ):
        Task(
            "classify",
            None,
            [f"dataset.root={data}", f"results_dir={tmp_path / 'runs'}", *TINY, "train.loggers=[wandb]"],
        ).train()
