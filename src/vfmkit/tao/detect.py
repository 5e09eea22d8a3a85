"""Refuse an unconverted TAO spec given to ``vfm <task> ...`` (or :class:`vfmkit.Task`), saying how to convert it.

A spec looks like TAO's when it has keys that only TAO specs have (at least two keys of the mapping tables that the
vfmkit task's spec does not accept, e.g. ``train.num_epochs``, ``model.backbone.type``, ``gen_trt_engine``) or
OmegaConf ``${...}`` interpolations. A converted spec with ``???`` left is refused too, naming the key to fill in
(``???`` would otherwise pass as a string and fail later with a less clear message).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from vfmkit.spec.loader import SpecError
from vfmkit.tao.convert import candidate_tasks, flatten, holds_placeholder
from vfmkit.tao.tables import MapRow, shared_rows, tao_tasks

SHOWN = 3
"""TAO keys quoted in the message."""
MIN_SIGNS = 2
"""TAO keys it takes (without ``${...}``) to call a spec TAO's: one is more likely a typo in a vfmkit spec, which the
normal validation error names with the closest vfmkit key."""


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The spec sections a field's type holds (through ``X | None``, ``list[X]`` ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _sections(arg)]


def spec_accepts(schema: type[BaseModel], dotted: str) -> bool:
    """Whether ``dotted`` is a key of the spec ``schema`` (a section, a field, or a key inside a mapping field)."""
    model, parts = schema, dotted.split(".")
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if index == len(parts) - 1:
            return True
        sections = _sections(field.annotation)
        if not sections:  # a value: only a mapping-typed field has keys below it
            return typing.get_origin(field.annotation) is dict or field.annotation is Any
        rest = ".".join(parts[index + 1 :])
        return any(spec_accepts(section, rest) for section in sections)
    return True


def _all_rows() -> list[MapRow]:
    rows = list(shared_rows())
    for task in tao_tasks().values():
        rows += task.rows
    return rows


def _prefixes(data: dict[str, Any]) -> list[str]:
    """Every dotted key of the data, sections included, in file order."""
    keys: list[str] = []
    for leaf in flatten(data):
        parts = leaf.split(".")
        keys += [".".join(parts[: i + 1]) for i in range(len(parts)) if ".".join(parts[: i + 1]) not in keys]
    return keys


def _interpolations(data: Any, prefix: str = "") -> list[str]:
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _interpolations(value, f"{prefix}{key}.")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _interpolations(value, f"{prefix}{index}.")
    elif isinstance(data, str) and "${" in data:
        found.append(prefix.rstrip("."))
    return found


def tao_signs(data: dict[str, Any], schemas: list[type[BaseModel]]) -> list[str]:
    """Keys that mark ``data`` as a TAO spec: TAO keys none of ``schemas`` accepts, then ``${...}`` values."""
    rows = _all_rows()
    signs: list[str] = []
    for key in _prefixes(data):
        if any(spec_accepts(schema, key) for schema in schemas) or any(key.startswith(s + ".") for s in signs):
            continue
        path = key.split(".")
        if any(row.matches(path) for row in rows):
            signs.append(key)
    return signs + [f"{key}: ${{...}}" for key in _interpolations(data)]


def _hint(path: Path, data: dict[str, Any], vfm_task: str | None) -> str:
    found = [n for n in candidate_tasks(data) if vfm_task is None or tao_tasks()[n].vfm_task == vfm_task]
    if len(found) != 1:
        found = [n for n, t in tao_tasks().items() if vfm_task is None or t.vfm_task == vfm_task]
    task = f" --task {found[0]}" if len(found) == 1 else f" --task {'|'.join(found)}"
    return f"vfm spec from-tao {path}{task} -o vfm_spec.yaml"


def refuse_tao_spec(
    path: Path, data: dict[str, Any], merged: dict[str, Any], vfm_task: str | None, schemas: list[type[BaseModel]]
) -> None:
    """Raise when ``data`` (the file) looks like a TAO spec, or ``merged`` (file + overrides) still holds ``???``.

    Args:
        path: the spec file (for the message).
        data: its content; merged: with the command-line overrides applied.
        vfm_task: the task it was given to (None: any; for the ``--task`` hint).
        schemas: the spec classes whose keys are not TAO signs (the task's, or every task's).

    Raises:
        SpecError: one line: the TAO keys seen and the ``vfm spec from-tao`` command that converts the file; or the
            ``???`` key to fill in.
    """
    signs = tao_signs(data, schemas)
    if len(signs) >= MIN_SIGNS or any(sign.endswith("${...}") for sign in signs):
        shown = ", ".join(signs[:SHOWN]) + (f" and {len(signs) - SHOWN} more" if len(signs) > SHOWN else "")
        raise SpecError(
            f"{path} looks like a TAO spec ({shown}), not a vfmkit spec: convert it first with "
            f"`{_hint(path, data, vfm_task)}`"
        )
    holes = [key for key, value in flatten(merged).items() if holds_placeholder(value)]
    if holes:
        key = holes[0]
        raise SpecError(f"{path}: '{key}' is ??? (a value to fill in): set it in the file or pass {key}=VALUE")
