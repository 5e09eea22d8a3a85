"""The task-agnostic engine: one train / evaluate / predict / export skeleton that runs any task definition
(:mod:`vfmkit.engine.taskdef`), Lightning wiring, run folders, checkpoints, resume, callbacks, plots, model cards.

The engine never imports :mod:`vfmkit.tasks`; :class:`vfmkit.Task` and the CLI hand it a task family.
"""

from vfmkit.engine.evaluate import evaluate
from vfmkit.engine.export import export
from vfmkit.engine.predict import predict
from vfmkit.engine.train import train

__all__ = ["evaluate", "export", "predict", "train"]
