"""The spec reference of a task: every key of its pydantic spec, recursively, with type, default and help text."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .markdown import code, table, text

_BOUNDS = (
    (annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
)  # fmt: skip


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _is_path(annotation: Any) -> bool:
    return annotation is Path or (isinstance(annotation, type) and issubclass(annotation, Path))


def type_text(annotation: Any) -> str:
    """A field type as Markdown: ``int``, ``float``, ``path``, `` `a` \\| `b` `` for literals, ``list[...]``, ``X |
    null``; a nested spec section reads ``section``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is Literal:
        return r" \| ".join(code(yaml_text(value)) for value in args)
    if origin in (typing.Union, types.UnionType):
        return r" \| ".join(type_text(arg) for arg in args)
    if _is_path(annotation):
        return "path"
    if _is_model(annotation):
        return "section"
    if origin in (list, tuple, dict, set):
        inner = ", ".join("…" if arg is Ellipsis else type_text(arg) for arg in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def bounds_text(field: FieldInfo) -> str:
    """The numeric and length constraints of a field, e.g. ``≥ 0, < 1``."""
    found = []
    for item in field.metadata:
        for kind, attribute, sign in _BOUNDS:
            if isinstance(item, kind):
                found.append(f"{sign} {getattr(item, attribute)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            found.append(f"at least {item.min_length} long")
    return ", ".join(found)


def yaml_text(value: Any) -> str:
    """A value as it is written in a spec (YAML flow style)."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return dumped.removesuffix("...").strip()


def default_text(field: FieldInfo) -> str:
    """The default as Markdown: the YAML value, or *required*."""
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "*required*"
    else:
        value = field.default
    if _is_model(type(value)):
        return "(the section's defaults)"
    return code(yaml_text(value))


def _nested(annotation: Any, item: bool = False) -> Iterator[tuple[str, type[BaseModel]]]:
    """Spec sections inside a field's type: ``("", Model)`` for the field itself, ``("[]", Model)`` for list items."""
    if _is_model(annotation):
        yield ("[]" if item else ""), annotation
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _nested(args[0], item)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _nested(arg, item)
    elif origin in (list, tuple, set):
        for arg in args:
            yield from _nested(arg, True)


def field_rows(model: type[BaseModel], name: str, prefix: str = "") -> list[list[str]]:
    """The row of one key of ``model`` (key, type, default, description), then the rows of the sections below it."""
    field = model.model_fields[name]
    key = f"{prefix}{name}"
    kind = type_text(field.annotation)
    bounds = bounds_text(field)
    description = field.description or (model_doc(field.annotation) if kind == "section" else "")
    rows = [
        [
            f"{code(key)}{{ #{key.replace('[]', '')} }}",
            f"{kind}, {bounds}" if bounds else kind,
            default_text(field),
            text(description),
        ]
    ]
    seen = set()
    for suffix, section in _nested(field.annotation):
        if (suffix, section) not in seen:
            seen.add((suffix, section))
            rows += key_rows(section, f"{key}{suffix}.")
    return rows


def key_rows(model: type[BaseModel], prefix: str = "") -> list[list[str]]:
    """The rows of every key of ``model`` and of every section below it (see :func:`field_rows`)."""
    return [row for name in model.model_fields for row in field_rows(model, name, prefix)]


def model_doc(annotation: Any) -> str:
    """The first line of a section class's docstring."""
    doc = (getattr(annotation, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def spec_page(task: str, schema: type[BaseModel], template: str, guide: str) -> str:
    """The reference page of one task's spec: top-level keys, one table per section, and the starting spec."""
    top, sections = [], []
    for name, field in schema.model_fields.items():
        if _is_model(field.annotation):
            sections.append((name, field))
        else:
            top += field_rows(schema, name)
    lines = [
        f"# `{task}` spec reference",
        "",
        f"Every key of the `{task}` spec (`{schema.__name__}`), generated from the code. Set a key in the spec file "
        f"(`vfm spec init {task}` writes one with every default) or on the command line as a dotted override "
        f"(`vfm {task} train -c spec.yaml train.epochs=3`). Relative paths resolve against the spec file's folder. "
        f"How to use the task: [the {task} guide]({guide}).",
        "",
        "## Top-level keys",
        "",
        table(("key", "type", "default", "description"), top),
    ]
    for name, field in sections:
        lines += ["", f"## `{name}`", ""]
        if field.description:
            lines += [text(field.description), ""]
        lines.append(table(("key", "type", "default", "description"), key_rows(field.annotation, f"{name}.")))
    lines += [
        "",
        "## Starting spec",
        "",
        f"What `vfm spec init {task}` writes:",
        "",
        "```yaml",
        template.rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)
