"""The CLI reference: every ``vfm`` command with its usage, help, arguments and options, from the typer app."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

from .markdown import code, table, text


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, command)`` of ``command`` and every visible command below it, depth first in registration order."""
    yield path, command
    for name, child in getattr(command, "commands", {}).items():
        if not child.hidden:
            yield from walk(child, (*path, name))


def anchor(path: tuple[str, ...]) -> str:
    """The heading id of a command on the CLI page: ``vfm-models-export``."""
    return "-".join(("vfm", *path))


def _help_paragraphs(help_text: str, docs_line: str) -> list[str]:
    paragraphs = [p for p in (help_text or "").strip().split("\n\n") if p.strip()]
    return [text(p) for p in paragraphs if not p.strip().startswith(docs_line)]


def _annotation_type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_annotation_type(arg) for arg in args if arg is not type(None))
    if origin in (list, tuple):
        return _annotation_type(args[0]) if args else "text"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(code(member.value) for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return {str: "text", int: "integer", float: "number", bool: "flag"}.get(
        annotation, getattr(annotation, "__name__", "text")
    )


def param_type(param: Any) -> str:
    """A parameter's type as Markdown: ``integer``, ``path``, the choices of an enum ..."""
    descriptor = getattr(param, "type_descriptor", None)  # typer >= 0.25 keeps the annotation
    if descriptor is not None:
        return _annotation_type(descriptor.annotation)
    choices = getattr(param.type, "choices", None)  # typer on click
    if choices:
        return " \\| ".join(code(getattr(choice, "value", choice)) for choice in choices)
    return param.type.name


def _param_rows(command: Any) -> list[list[str]]:
    rows = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        is_option = param.param_type_name == "option"
        if is_option and param.name == "help":
            continue
        names = [*param.opts, *param.secondary_opts] if is_option else [param.name.upper()]
        kind = param_type(param)
        if getattr(param, "multiple", False):
            kind += ", repeatable"
        default = param.default
        if param.required:
            shown = "*required*"
        elif default is None or default == () or (getattr(param, "is_flag", False) and default is False):
            shown = ""
        else:
            shown = code(getattr(default, "value", default))
        cells = [", ".join(code(name) for name in names), kind, shown, text(getattr(param, "help", "") or "")]
        rows.append(cells)
    return rows


def cli_page(
    root: Any, page_of: Callable[[tuple[str, ...]], str], docs_line: str, title_of: Callable[[str], str]
) -> str:
    """The CLI page: one section per command (``## vfm models export``, id ``vfm-models-export``) with its usage
    line, help, parameter table and a link to its page ``page_of(path)`` (a ``docs/`` page, titled ``title_of(page)``;
    this page is ``reference/cli.md``)."""
    lines = [
        "# Command line reference",
        "",
        "Every `vfm` command, generated from the CLI itself (`vfm <command> --help` prints the same). Task commands "
        "take a spec (`-c spec.yaml`) and dotted `key=value` overrides after the options: their keys are in the "
        "[spec reference](spec/index.md).",
    ]
    for path, command in walk(root):
        ctx = command.context_class(command, info_name=" ".join(("vfm", *path)))
        usage = " ".join(["vfm", *path, *command.collect_usage_pieces(ctx)])
        if getattr(command, "context_settings", {}).get("allow_extra_args") and not getattr(command, "commands", None):
            usage += " [KEY=VALUE]..."
        level = "#" * min(2 + max(len(path) - 1, 0), 4)
        lines += ["", f"{level} `{' '.join(('vfm', *path))}` {{ #{anchor(path)} }}", "", "```text", usage, "```", ""]
        lines += [p + "\n" for p in _help_paragraphs(command.help, docs_line)]
        rows = _param_rows(command)
        if rows:
            lines += [table(("parameter", "type", "default", "help"), rows), ""]
        subcommands = [name for name, child in getattr(command, "commands", {}).items() if not child.hidden]
        if subcommands:
            links = ", ".join(f"[`{name}`](#{anchor((*path, name))})" for name in subcommands)
            lines += [f"Commands: {links}.", ""]
        page = page_of(path)
        lines.append(f"Documented in: [{text(title_of(page))}](../{page})")
    return "\n".join(lines) + "\n"
