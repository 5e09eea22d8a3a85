"""The task registry: task name -> the module whose ``TASK`` is its task definition (imported on first use).

Adding a task is one folder under ``vfmkit/tasks/`` with a ``hooks.py`` that defines ``TASK`` (a
:class:`~vfmkit.engine.taskdef.TaskDef`, or a family of them) and one line here. The CLI (``vfm <task> <action>``),
:class:`vfmkit.Task` and the contract test (``tests/tasks/test_contract.py``) read this registry.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from vfmkit.errors import VfmError

if TYPE_CHECKING:
    from vfmkit.engine.taskdef import TaskFamily

TASK_MODULES: dict[str, str] = {
    "classify": "vfmkit.tasks.classify.hooks",
    "segment": "vfmkit.tasks.segment.hooks",
    "change": "vfmkit.tasks.change.hooks",
    "detect": "vfmkit.tasks.detect.hooks",
    "universal": "vfmkit.tasks.universal.hooks",
    "clip": "vfmkit.tasks.clip.hooks",
    "distill": "vfmkit.tasks.distill.hooks",
}

ALIASES: dict[str, str] = {"oneformer": "universal"}
"""Other names accepted for a task (e.g. TAO's)."""

ONNX_PREDICT: tuple[str, ...] = ("classify", "segment", "detect", "universal")
"""The tasks whose ``predict`` runs an exported ``.onnx`` graph (their TaskDef implements ``onnx_predictor``)."""


def task_names() -> list[str]:
    """The registered task names, in registration order."""
    return list(TASK_MODULES)


def canonical_task(name: str) -> str:
    """The registered name of ``name`` (itself or an alias).

    Raises:
        VfmError: unknown task (with the closest names).
    """
    name = ALIASES.get(name, name)
    if name not in TASK_MODULES:
        close = difflib.get_close_matches(name, [*TASK_MODULES, *ALIASES], n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise VfmError(f"unknown task {name!r}; available: {', '.join(TASK_MODULES)}{hint}")
    return name


def get_task(name: str) -> TaskFamily:
    """The task family of a registered task name or alias."""
    return importlib.import_module(TASK_MODULES[canonical_task(name)]).TASK
