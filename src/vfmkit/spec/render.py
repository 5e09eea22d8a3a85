"""Write a commented starting spec (``vfm spec init <task>``) and print resolved specs (``vfm spec show``)."""

from __future__ import annotations

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


def render_commented(model: type[BaseModel], indent: int = 0, overrides: dict[str, Any] | None = None) -> list[str]:
    """YAML lines for every field of ``model`` with its description as a comment above it."""
    lines, pad = [], " " * indent
    overrides = overrides or {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if field.description:
            lines.append(f"{pad}# {field.description}")
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{pad}{name}:")
            lines += render_commented(annotation, indent + 2, overrides.get(name) or {})
            continue
        value = overrides.get(name, _field_default(field))
        lines.append(f"{pad}{name}: {yaml_scalar(value)}")
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
