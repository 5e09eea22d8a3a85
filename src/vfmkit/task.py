"""The Python face of ``vfm <task> <action>``: the same verbs, driven by a spec file, a dict or overrides.

import vfmkit
task = vfmkit.Task("classify", "spec.yaml", ["train.epochs=3"])
result = task.train()          # TrainResult: run_dir, best_checkpoint, val metrics (fractions)
task.evaluate(); task.predict(); task.export()
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from vfmkit.spec.loader import (
    SpecError,
    deep_merge,
    load_spec,
    parse_overrides,
    read_yaml,
    resolve_paths,
    validate_spec,
)
from vfmkit.tasks import ONNX_PREDICT, canonical_task, get_task, task_names

ACTIONS = ("train", "evaluate", "predict", "export")


def spec_class(task: str) -> type[BaseModel]:
    """The spec schema of a task (name or alias).

    Raises:
        VfmError: unknown task.
    """
    return get_task(task).spec_class


def infer_task(spec_path: str | Path | None, overrides: Sequence[str] = ()) -> str:
    """The task of a spec: its ``task`` key (``vfm spec init`` writes it), else the one schema it validates against.

    Raises:
        SpecError: it validates as none of the tasks (the error of the first) or as several.
    """
    declared = parse_overrides(list(overrides)).get("task")
    if not declared and spec_path:
        declared = read_yaml(Path(spec_path)).get("task")
    if declared:
        return canonical_task(str(declared))
    if spec_path:
        _refuse_tao(Path(spec_path), None, overrides, [spec_class(task) for task in task_names()])
    errors, matches = [], []
    for task in task_names():
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


def _refuse_tao(spec: Path | dict, task: str | None, overrides: Sequence[str], schemas: list[type[BaseModel]]) -> None:
    """Stop on an unconverted TAO spec (naming ``vfm spec from-tao``) or a ``???`` left to fill in."""
    from vfmkit.tao.detect import refuse_tao_spec

    data = spec if isinstance(spec, dict) else read_yaml(spec)
    merged = deep_merge(data, parse_overrides(list(overrides)))
    refuse_tao_spec(Path("the spec") if isinstance(spec, dict) else spec, data, merged, task, schemas)


class Task:
    """A task with its resolved spec; call :meth:`train`, :meth:`evaluate`, :meth:`predict` or :meth:`export`.

    Args:
        task: task name (``classify``) or alias.
        spec: a spec file path, a dict (relative paths against the cwd), a spec object, or None (defaults).
        overrides: dotted ``key=value`` strings applied on top.
    """

    def __init__(self, task: str, spec: str | Path | dict | BaseModel | None = None, overrides: Sequence[str] = ()):
        self.name = canonical_task(task)
        self.family = get_task(self.name)
        schema = self.family.spec_class
        if isinstance(spec, BaseModel):
            spec = spec.model_dump(mode="json")
        elif spec is not None:
            _refuse_tao(spec if isinstance(spec, dict) else Path(spec), self.name, overrides, [schema])
        if isinstance(spec, dict):
            merged = deep_merge(spec, parse_overrides(list(overrides)))
            self.spec = validate_spec(schema, merged, {})
            resolve_paths(self.spec, Path.cwd(), set())
        else:
            self.spec = load_spec(schema, spec, list(overrides))

    def run(self, action: str) -> Any:
        """Run one verb: ``train``, ``evaluate``, ``predict`` or ``export``."""
        if action not in ACTIONS:
            raise SpecError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        from vfmkit import engine
        from vfmkit.engine.trained import ExportedGraphError

        try:
            return getattr(engine, action)(self.family, self.spec)
        except ExportedGraphError as err:
            err.args = (f"{err}; exported graphs are accepted by predict.checkpoint of {', '.join(ONNX_PREDICT)}",)
            raise

    def train(self) -> Any:
        return self.run("train")

    def evaluate(self) -> Any:
        return self.run("evaluate")

    def predict(self) -> Any:
        return self.run("predict")

    def export(self) -> Any:
        return self.run("export")
