"""Resolve a spec: schema defaults <- YAML file <- dotted ``key=value`` overrides, then validate.

Errors are :class:`~vfmkit.errors.SpecError` with the dotted path, where the value came from (file or override),
what was expected and, for unknown keys, the closest valid key.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vfmkit.errors import VfmError
from vfmkit.spec.base import PathMarker


class SpecError(VfmError):
    """An invalid spec file or override."""


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.epochs=3", "model.mode=finetune"]`` -> nested dict; values parsed as YAML scalars/lists.

    Raises:
        SpecError: an override without ``=`` or with an empty key.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or any(not part for part in key.split(".")):
            raise SpecError(f"override {item!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        target = nested
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SpecError(f"override {item!r}: {part!r} is set to a value and also used as a section")
        target[parts[-1]] = value
    return nested


def read_yaml(path: Path) -> dict[str, Any]:
    """A spec file as a dict.

    Raises:
        SpecError: missing file, YAML syntax error (with line), a key written twice in one section (naming the key
            and both lines; YAML would silently keep the last), or a top level that is not a mapping.
    """
    from vfmkit.utils.strict_yaml import DuplicateKeyError, load_strict

    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        data = load_strict(path.read_text()) or {}
    except DuplicateKeyError as err:
        raise SpecError(
            f"{path}: key '{err.dotted}' is set twice, on line {err.first_line} and on line {err.line}; keep one"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge; ``update`` wins."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _flatten(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.add(dotted)
        if isinstance(value, dict):
            keys |= _flatten(value, dotted + ".")
    return keys


def schema_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += schema_paths(annotation, prefix + name + ".")
    return paths


def _suggest(dotted: str, model: type[BaseModel]) -> str:
    valid = schema_paths(model)
    parent = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    siblings = [p for p in valid if p.startswith(parent) and "." not in p[len(parent) :]]
    leaf = dotted.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(dotted, siblings, n=1, cutoff=0.6)
    close = close or [p for p in valid if p.rsplit(".", 1)[-1] == leaf]  # right key, wrong section
    close = close or difflib.get_close_matches(dotted, valid, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys here: {', '.join(siblings[:12])}"


def _format_error(error: dict[str, Any], model: type[BaseModel], origin: dict[str, str]) -> tuple[str, str]:
    """(where the value came from, the problem) of one validation error."""
    dotted = ".".join(str(p) for p in error["loc"])
    source = origin.get(dotted) or origin.get(dotted.split(".")[0], "spec")
    if error["type"] == "extra_forbidden" and _glued_key_value(error):
        key, _, value = str(error["loc"][-1]).partition(":")
        return (
            source,
            f"'{dotted}' is read as one key without a value: write `{key}: {value}` with a space after the colon",
        )
    if error["type"] == "extra_forbidden":
        return source, f"unknown key '{dotted}'{_suggest(dotted, model)}"
    if error["type"] == "missing":
        return source, f"'{dotted}' is required"
    message, value = error["msg"].removeprefix("Value error, "), error.get("input")
    if isinstance(value, dict):  # a section's own check names the key and value it refuses: not the whole section
        return source, message if dotted in message else f"'{dotted}': {message}"
    return source, f"'{dotted}': {message} (got {value!r})"


def _glued_key_value(error: dict[str, Any]) -> bool:
    """Whether an unknown key is a ``key:value`` written without the space YAML needs (``{backbone:x}`` in a flow
    mapping is the key ``backbone:x`` with no value)."""
    leaf = str(error["loc"][-1]) if error["loc"] else ""
    key, colon, value = leaf.partition(":")
    return bool(colon and key.strip() and value.strip()) and error.get("input") is None


def validate_spec(model: type[BaseModel], data: dict[str, Any], origin: dict[str, str]) -> BaseModel:
    """Validate merged data against the schema; every error becomes one :class:`SpecError` line (problems joined by
    ``; ``, a ``key:value`` written without its space first, since it causes the others)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_errors(err.errors(), model, origin)) from None


def format_validation_errors(errors: list[dict[str, Any]], model: type[BaseModel], origin: dict[str, str]) -> str:
    """Every problem of a pydantic validation as one line (``; ``-separated, the source named once when they share
    it, a ``key:value`` written without its space first, since it causes the others).

    Args:
        errors: ``ValidationError.errors()``.
        model: the schema (for key suggestions).
        origin: dotted key -> where its value came from (a file, ``command-line override`` ...).
    """
    errors = sorted(errors, key=lambda e: not (e["type"] == "extra_forbidden" and _glued_key_value(e)))
    problems = list(dict.fromkeys(_format_error(error, model, origin) for error in errors))
    if len({source for source, _ in problems}) == 1:
        return f"{problems[0][0]}: " + "; ".join(text for _, text in problems)
    return "; ".join(f"{source}: {text}" for source, text in problems)


def _is_spec_path(field) -> bool:
    """Whether a field is a :data:`SpecPath` (also inside ``SpecPath | None``)."""
    if any(isinstance(m, PathMarker) for m in field.metadata):
        return True
    return any(
        isinstance(m, PathMarker) for arg in typing.get_args(field.annotation) for m in getattr(arg, "__metadata__", ())
    )


def resolve_paths(spec: BaseModel, base_dir: Path, from_file: set[str], prefix: str = "") -> None:
    """Make relative path fields absolute: file values against ``base_dir``, overrides against the cwd."""
    for name, field in type(spec).model_fields.items():
        value = getattr(spec, name)
        dotted = prefix + name
        if isinstance(value, BaseModel):
            resolve_paths(value, base_dir, from_file, dotted + ".")
        elif isinstance(value, list) and value and all(isinstance(item, BaseModel) for item in value):
            # a list of sections (e.g. dataset.train_data_sources): its items come from where the list came from
            inner = {f"{dotted}.{key}" for key in _all_keys(type(value[0]))} if dotted in from_file else set()
            for item in value:
                resolve_paths(item, base_dir, from_file | inner, dotted + ".")
        elif isinstance(value, Path) and _is_spec_path(field):
            root = base_dir if dotted in from_file else Path.cwd()
            resolved = value.expanduser()
            setattr(spec, name, resolved if resolved.is_absolute() else (root / resolved).resolve())


def _all_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    return set(schema_paths(model, prefix))


def load_spec(model: type[BaseModel], path: str | Path | None, overrides: list[str] | None = None) -> BaseModel:
    """Defaults <- YAML file <- overrides, validated, with relative paths resolved.

    Args:
        model: the task's spec class.
        path: the YAML spec file, or None for defaults + overrides only.
        overrides: dotted ``key=value`` strings.

    Raises:
        SpecError: any problem, with the dotted key, its source and what was expected.
    """
    file_data = read_yaml(Path(path)) if path else {}
    override_data = parse_overrides(list(overrides or []))
    origin = {k: str(path) for k in _flatten(file_data)}
    origin.update({k: "command-line override" for k in _flatten(override_data)})
    spec = validate_spec(model, deep_merge(file_data, override_data), origin)
    from_file = {k for k, v in origin.items() if v == str(path)}
    resolve_paths(spec, Path(path).resolve().parent if path else Path.cwd(), from_file)
    return spec
