"""The TAO key-mapping page: the tables ``vfm spec from-tao`` converts with, rendered row by row.

The tables are data files beside each task's spec (``vfmkit/tasks/<task>/tao_map.yaml``, the shared rows in
``vfmkit/spec/tao_map.yaml``), loaded and validated by :mod:`vfmkit.tao.tables`; this module only renders what that
module returns: :class:`~vfmkit.tao.tables.TaoTask` objects (``name``, ``vfm_task``, ``title``, ``aliases``,
``extends``, ``set``, ``required``, ``rows``) of :class:`~vfmkit.tao.tables.MapRow` rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .markdown import code, table, text

REASONS = {
    "gpu-only": "not converted: GPU only",
    "not-applicable": "not converted: not applicable",
    "not-supported-yet": "not converted: not supported yet",
}
HEADER = ("TAO key", "vfmkit key", "how", "example (TAO → vfmkit when it changes)", "note")


def _given(row: Any, name: str) -> bool:
    """Whether the row's ``example`` / ``expect`` was given (the tables mark "not given" with a bare ``object()``)."""
    return type(getattr(row, name, None)) is not object


def _yaml(value: Any) -> str:
    from .spec_reference import yaml_text

    return code(yaml_text(value))


def how_text(row: Any) -> str:
    """The transform of a row in a few words (Markdown)."""
    kind = row.transform
    if kind == "rename":
        how = "same value"
    elif kind in ("enum", "append") and row.values:
        pairs = ", ".join(f"{_yaml(k)} → {_yaml(v)}" for k, v in row.values.items())
        how = f"{kind}: {pairs}"
    elif kind == "backbone":
        how = "registry name (TAO aliases)" + (" in the CLIP registry" if row.namespace == "clip" else "")
    elif kind == "ratio":
        how = f"divided by {code(row.of)}"
    elif kind == "item":
        how = f"list item {row.index}" + (" (one value only)" if row.only_one else "")
    elif kind == "pair":
        how = f"range with {code(row.of)}"
    elif kind == "same_as":
        how = f"must equal {code(row.of)}"
    elif kind == "subfolder":
        how = f"folder name under {code(row.of)}"
    elif kind == "palette":
        how = "palette entries" + (f" (ids × {row.factor})" if row.factor != 1 else "")
    else:
        how = kind
    if row.keep:
        how += "; default for " + ", ".join(_yaml(v) for v in row.keep)
    if row.when:
        how += "; when " + ", ".join(f"{code(k)} = {_yaml(v)}" for k, v in row.when.items())
    return how


def row_cells(row: Any, tao_prefix: str = "", vfm_prefix: str = "") -> list[list[str]]:
    """The table rows of one mapping row (an ``each`` row adds the rows of its list items, keys ending in ``[]``)."""
    if row.vfm is None:
        target, how = REASONS.get(row.reason, f"not converted: {row.reason}"), ""
    else:
        target, how = code(f"{vfm_prefix}{row.vfm}"), how_text(row)
    example = ""
    if _given(row, "example"):
        example = _yaml(row.example)
        if row.vfm is not None and _given(row, "expect"):
            example += " → " + _yaml(row.expect)
    cells = [[code(f"{tao_prefix}{row.tao}"), target, how, example, text(row.note)]]
    for item in row.rows:
        cells += row_cells(item, f"{tao_prefix}{row.tao}[].", f"{vfm_prefix}{row.vfm}[].")
    return cells


def rows_table(rows: Iterable[Any]) -> str:
    return table(HEADER, [cells for row in rows for cells in row_cells(row)])


def task_section(task: Any) -> list[str]:
    """The section of one TAO task: how to convert it, what it fixes, and its own rows."""
    names = ", ".join(code(n) for n in (task.name, *task.aliases))
    lines = [f"### {task.name} {{ #{task.name} }}", "", text(task.title), "", f"`--task`: {names}."]
    if task.extends:
        lines.append(f"Inherits the rows of [{task.extends}](#{task.extends}) (its own rows below replace them).")
    if task.set:
        lines.append("Sets " + ", ".join(f"{code(k)}: {_yaml(v)}" for k, v in task.set.items()) + ".")
    if task.required:
        lines.append(
            "Must be filled (left `???` when the TAO spec has no value): "
            + ", ".join(code(k) for k in task.required)
            + "."
        )
    lines += ["", rows_table(task.rows), ""]
    return lines


def tao_page(shared: Sequence[Any], tasks: Sequence[Any], task_order: Sequence[str]) -> str:
    """The mapping page (``reference/tao.md``): the shared rows, then per vfmkit task (in ``task_order``) each TAO
    task that converts into it."""
    lines = [
        "# TAO key mapping",
        "",
        "How `vfm spec from-tao` converts each key of a TAO experiment spec, generated from its mapping tables "
        "(`vfmkit/tasks/<task>/tao_map.yaml`, shared rows in `vfmkit/spec/tao_map.yaml`). A key marked *not "
        "converted* is listed at the top of the written spec with the note below; `*` in a TAO key matches any one "
        "key. How to use the converter: [Coming from TAO](../guides/tao.md).",
        "",
        "## Keys every TAO task shares",
        "",
        "A task's own row replaces a shared row of the same TAO key.",
        "",
        rows_table(shared),
        "",
    ]
    for vfm_task in task_order:
        mine = [task for task in tasks if task.vfm_task == vfm_task]
        if mine:
            lines += [f"## vfmkit `{vfm_task}`", "", f"Spec keys: [{vfm_task} spec reference](spec/{vfm_task}.md).", ""]
            for task in mine:
                lines += task_section(task)
    return "\n".join(lines)


def unavailable_page(reason: str) -> str:
    """The mapping page of a vfmkit without the converter's tables."""
    return "\n".join(
        [
            "# TAO key mapping",
            "",
            f"This build of vfmkit has no TAO mapping tables ({text(reason)}). The [Coming from TAO](../guides/tao.md) "
            "guide lists TAO's names that vfmkit accepts directly.",
            "",
        ]
    )
