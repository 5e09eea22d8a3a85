"""``vfm change train | evaluate | predict | export`` (Visual ChangeNet): the task's spec class and verbs.

The implementations live in :mod:`vfmkit.engine.change_train` (train, split evaluation, metrics files) and
:mod:`vfmkit.engine.change_infer` (evaluate, predict, export).
"""

from __future__ import annotations

from vfmkit.engine.change_infer import evaluate, export, predict
from vfmkit.engine.change_train import TrainResult, train
from vfmkit.spec.change import ChangeSpec

SPEC_CLASS = ChangeSpec
VERBS = {"train": train, "evaluate": evaluate, "predict": predict, "export": export}

__all__ = ["SPEC_CLASS", "VERBS", "TrainResult", "evaluate", "export", "predict", "train"]
