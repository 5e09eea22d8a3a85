"""Check a conversion against the vfmkit task's pydantic spec and write it as a commented YAML spec.

The written spec holds only what came from the TAO spec (each key with its TAO key in a comment); vfmkit's defaults
fill the rest when it is loaded (``vfm spec show -c FILE`` prints them). Its header lists the keys to fill in
(``???``) and every TAO key that was not converted, grouped by why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from vfmkit.spec.loader import SpecError, format_validation_errors, schema_paths
from vfmkit.spec.render import yaml_scalar
from vfmkit.tao.convert import CATEGORIES, Conversion, Source, Unmapped, nest

COMMENT_WIDTH = 60
"""Longest TAO value quoted in a comment (longer ones are cut with ...)."""


def _forgiven(loc: tuple, holes: list[str]) -> bool:
    dotted = ".".join(str(part) for part in loc)
    return any(hole == dotted or hole.startswith(dotted + ".") or dotted.startswith(hole + ".") for hole in holes)


def validate_conversion(conversion: Conversion, schema: type[BaseModel], source: Path) -> None:
    """Validate the converted spec; keys still ``???`` (and the checks that need them) are left for later.

    Raises:
        SpecError: the first problem, naming the vfmkit key and the TAO key (or override) it came from.
    """
    holes = conversion.placeholders
    data = conversion.data()
    stripped = {k: v for k, v in conversion.values.items() if k not in holes}
    try:
        schema.model_validate(nest(stripped) if holes else data)
    except ValidationError as err:
        errors = [e for e in err.errors() if not _forgiven(e["loc"], holes)]
        if errors:
            origin = {key: _origin(sources, source) for key, sources in conversion.sources.items()}
            raise SpecError(format_validation_errors(errors, schema, origin)) from None


def _origin(sources: list[Source], path: Path) -> str:
    keys = [s.tao_key for s in sources]
    if keys == ["command line"]:
        return "command-line override"
    return f"{path} (TAO {', '.join(keys)})"


def _short(value: Any) -> str:
    text = yaml_scalar(value)
    return text if len(text) <= COMMENT_WIDTH else text[: COMMENT_WIDTH - 3] + "..."


def _comment(key: str, value: Any, sources: list[Source]) -> str:
    if not sources:
        return ""
    if sources[0].tao_key == "command line":
        return "  # set on the command line"
    if sources[0].tao_key.startswith("TAO task "):
        return f"  # fixed by the {sources[0].tao_key}"
    parts = []
    for source in sources:
        same = len(sources) == 1 and source.value == value
        parts.append(source.tao_key if same else f"{source.tao_key}: {_short(source.value)}")
    fill = "fill in; " if value == "???" else ""
    return f"  # {fill}TAO {'; '.join(parts)}"


class _Writer:
    """Renders nested data in the schema's key order, each leaf with the comment of its dotted key."""

    def __init__(self, conversion: Conversion, schema: type[BaseModel]) -> None:
        self.conversion = conversion
        self.order = {path: index for index, path in enumerate(schema_paths(schema))}

    def rank(self, dotted: str) -> int:
        plain = ".".join(part for part in dotted.split(".") if not part.isdigit())
        return self.order.get(plain, len(self.order))

    def lines(self, node: dict[str, Any], prefix: str, indent: int, first: str = "") -> list[str]:
        out: list[str] = []
        for key in sorted(node, key=lambda k: self.rank(prefix + str(k))):
            value, dotted = node[key], prefix + str(key)
            pad = first if not out and first else " " * indent
            comment = _comment(dotted, value, self.conversion.sources.get(dotted, []))
            if isinstance(value, dict) and value and dotted not in self.conversion.values:
                out += [f"{pad}{key}:{comment}", *self.lines(value, dotted + ".", indent + 2)]
            elif isinstance(value, list) and value and dotted not in self.conversion.values:
                out.append(f"{pad}{key}:{comment}")
                for index, item in enumerate(value):
                    out += self.item(item, f"{dotted}.{index}", indent)
            else:
                out.append(f"{pad}{key}: {yaml_scalar(value)}{comment}")
        return out

    def item(self, item: Any, dotted: str, indent: int) -> list[str]:
        if isinstance(item, dict) and item:
            return self.lines(item, dotted + ".", indent + 2, first=" " * indent + "- ")
        return [f"{' ' * indent}- {yaml_scalar(item)}"]


def _unmapped_lines(unmapped: list[Unmapped]) -> list[str]:
    """The header block: per category, per note, the TAO keys with their values."""
    lines = [f"# Not converted ({len(unmapped)} TAO key(s) or section(s)):"]
    for category, heading in CATEGORIES.items():
        group = [item for item in unmapped if item.category == category]
        if not group:
            continue
        lines.append(f"#   {heading}:")
        notes = list(dict.fromkeys(item.note for item in group))
        for note in notes:
            lines.append(f"#   - {note}:")
            for item in (i for i in group if i.note == note):
                value = f"({len(item.value)} keys)" if isinstance(item.value, dict) else _short(item.value)
                lines.append(f"#       {item.tao_key}: {value}")
    return lines


def render_conversion(conversion: Conversion, schema: type[BaseModel], source: Path, out: Path | None) -> str:
    """The converted spec as commented YAML (it loads back to :meth:`Conversion.data`)."""
    task = conversion.task
    target = out.name if out else "<this file>"
    header = [
        f"# vfmkit `{task.vfm_task}` spec converted by `vfm spec from-tao` from the TAO {task.name} spec {source}",
        f"# ({task.title}). Train with: vfm {task.vfm_task} train -c {target}",
        "# Each key carries its TAO key in a comment; keys not written here take vfmkit's defaults",
        f"# (`vfm spec show -c {target}` prints them all).",
        "#",
    ]
    holes = conversion.placeholders
    if holes:
        header.append("# Fill in before training (edit them here, or convert again with key=value for each):")
        header += [f"#   {key}" for key in holes]
        header.append("#")
    if conversion.unmapped:
        header += [*_unmapped_lines(conversion.unmapped), "#"]
    body = _Writer(conversion, schema).lines(conversion.data(), "", 0)
    return "\n".join([*header, "", *body]) + "\n"
