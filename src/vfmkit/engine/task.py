"""The Python face of ``vfm <task> <action>``: the same verbs, driven by a spec file, a dict or overrides.

from vfmkit.engine import Task
task = Task("classify", "spec.yaml", ["train.epochs=3"])
result = task.train()
task.evaluate(); task.predict(); task.export()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from vfmkit.errors import VfmError
from vfmkit.spec.loader import SpecError, load_spec, parse_overrides, read_yaml, resolve_paths, validate_spec

ACTIONS = ("train", "evaluate", "predict", "export")


def _classify() -> tuple[type[BaseModel], dict[str, Callable]]:
    from vfmkit.engine import classify_export, classify_infer, classify_train
    from vfmkit.spec.classify import ClassifySpec

    verbs = {
        "train": classify_train.train,
        "evaluate": classify_infer.evaluate,
        "predict": classify_infer.predict,
        "export": classify_export.export,
    }
    return ClassifySpec, verbs


def _segment() -> tuple[type[BaseModel], dict[str, Callable]]:
    from vfmkit.engine import segment_infer, segment_train
    from vfmkit.spec.segment import SegmentSpec

    verbs = {
        "train": segment_train.train,
        "evaluate": segment_infer.evaluate,
        "predict": segment_infer.predict,
        "export": segment_infer.export,
    }
    return SegmentSpec, verbs


def _change() -> tuple[type[BaseModel], dict[str, Callable]]:
    from vfmkit.engine.change_verbs import SPEC_CLASS, VERBS

    return SPEC_CLASS, VERBS


TASKS: dict[str, Callable[[], tuple[type[BaseModel], dict[str, Callable]]]] = {
    "classify": _classify,
    "segment": _segment,
    "change": _change,
}


def spec_class(task: str) -> type[BaseModel]:
    """The spec schema of a task.

    Raises:
        VfmError: unknown task.
    """
    if task not in TASKS:
        raise VfmError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    return TASKS[task]()[0]


def infer_task(spec_path: str | Path | None, overrides: Sequence[str] = ()) -> str:
    """The task of a spec: its ``task`` key (``vfm spec init`` writes it), else the one schema it validates against.

    Raises:
        SpecError: it validates as none of the tasks (the error of the first) or as several.
    """
    declared = parse_overrides(list(overrides)).get("task")
    if not declared and spec_path:
        declared = read_yaml(Path(spec_path)).get("task")
    if declared:
        spec_class(str(declared))
        return str(declared)
    errors, matches = [], []
    for task in TASKS:
        try:
            load_spec(spec_class(task), spec_path, list(overrides))
            matches.append(task)
        except SpecError as err:
            errors.append(err)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise errors[0]
    raise SpecError(f"the spec is valid for several tasks ({', '.join(matches)}); add task: <name> or use --task")


class Task:
    """A task with its resolved spec; call :meth:`train`, :meth:`evaluate`, :meth:`predict` or :meth:`export`.

    Args:
        task: task name (``classify``).
        spec: a spec file path, a dict (relative paths against the cwd), a spec object, or None (defaults).
        overrides: dotted ``key=value`` strings applied on top.
    """

    def __init__(self, task: str, spec: str | Path | dict | BaseModel | None = None, overrides: Sequence[str] = ()):
        self.name = task
        schema = spec_class(task)
        if isinstance(spec, BaseModel):
            spec = spec.model_dump(mode="json")
        if isinstance(spec, dict):
            from vfmkit.spec.loader import deep_merge

            merged = deep_merge(spec, parse_overrides(list(overrides)))
            self.spec = validate_spec(schema, merged, {})
            resolve_paths(self.spec, Path.cwd(), set())
        else:
            self.spec = load_spec(schema, spec, list(overrides))

    def run(self, action: str) -> Any:
        if action not in ACTIONS:
            raise SpecError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        return TASKS[self.name]()[1][action](self.spec)

    def train(self) -> Any:
        return self.run("train")

    def evaluate(self) -> Any:
        return self.run("evaluate")

    def predict(self) -> Any:
        return self.run("predict")

    def export(self) -> Any:
        return self.run("export")
