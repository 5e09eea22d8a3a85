"""Write a commented starting spec (``vfm spec init <task>``) and print resolved specs (``vfm spec show``)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def yaml_scalar(value: Any) -> str:
    """One value as flow-style YAML on one line (paths as strings, tuples as lists)."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _field_default(field) -> Any:
    if field.default_factory is not None:
        return field.default_factory()
    return None if field.default is PydanticUndefined else field.default


def _sections(annotation: Any) -> tuple[type[BaseModel] | None, type[BaseModel] | None]:
    """(the section class, the list-item section class) an annotation holds: ``X``, ``X | None``, ``list[X]``,
    ``list[X] | None`` or ``X | list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, None
    if typing.get_origin(annotation) is list:
        item, _ = _sections(typing.get_args(annotation)[0])
        return None, item
    section = item = None
    for arg in typing.get_args(annotation):
        found, found_item = _sections(arg)
        section, item = section or found, item or found_item
    return section, item


def render_commented(model: type[BaseModel], indent: int = 0, overrides: dict[str, Any] | None = None) -> list[str]:
    """YAML lines for every field of ``model`` with its description as a comment above it.

    A section (or list of sections) left at null or empty is written ``name: null`` (``[]``) followed by the lines
    it would take commented out (``# name:`` ...), so every key of the schema appears in the template; a list of
    sections lists every field of each item.
    """
    lines, pad = [], " " * indent
    overrides = overrides or {}
    for name, field in model.model_fields.items():
        if field.description:
            lines.append(f"{pad}# {field.description}")
        value = overrides[name] if name in overrides else _field_default(field)
        if isinstance(value, BaseModel):
            value = value.model_dump()
        section, item = _sections(field.annotation)
        if item is not None and (isinstance(value, list) or (value is None and section is None)):
            block = _render_items(item, indent + 2, value or [{}])
        elif section is not None:
            block = render_commented(section, indent + 2, value or {})
        else:
            lines.append(f"{pad}{name}: {yaml_scalar(value)}")
            continue
        if value is None or value == []:  # an optional section or empty list: the keys it takes, commented out
            lines += [f"{pad}{name}: {yaml_scalar(value)}", f"{pad}# {name}:"]
            lines += [f"{pad}# {line[indent:]}" for line in block]
        else:
            lines += [f"{pad}{name}:", *block]
    return lines


def _render_items(model: type[BaseModel], indent: int, items: list[Any]) -> list[str]:
    """Block-style list items, every field of ``model`` in each (descriptions above)."""
    lines = []
    for item in items:
        rendered = render_commented(model, indent + 2, item if isinstance(item, dict) else {})
        first = next(i for i, line in enumerate(rendered) if not line.lstrip().startswith("#"))
        lines += [" " * indent + line.lstrip() for line in rendered[:first]]  # the first key's description
        lines += [" " * indent + "- " + rendered[first][indent + 2 :], *rendered[first + 1 :]]
    return lines


def render_spec_template(model: type[BaseModel], task: str, overrides: dict[str, Any] | None = None) -> str:
    """A complete, commented starting spec for ``task``."""
    header = [
        f"# vfmkit spec for `vfm {task} <train|evaluate|predict|export> -c <this file>`",
        "# Relative paths resolve against this file's folder. Override any key on the command line: train.epochs=3",
        "",
    ]
    return "\n".join(header + render_commented(model, overrides=overrides)) + "\n"


def render_resolved(spec: BaseModel) -> str:
    """The resolved spec as YAML (paths as strings)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
