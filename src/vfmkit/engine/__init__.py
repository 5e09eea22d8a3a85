"""Training engine: Lightning wiring, run folders, callbacks, and the task verbs (:class:`Task`)."""

from vfmkit.engine.task import Task

__all__ = ["Task"]
