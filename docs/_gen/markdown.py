"""Markdown pieces shared by the generated pages: escaped table cells and tables."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

_CODE_SPAN = re.compile(r"(`[^`]*`)")


def text(value: str) -> str:
    """``value`` as Markdown text that renders literally: ``<``, ``>``, ``&``, ``*`` and ``|`` are escaped outside
    backtick code spans (which are kept as code), newlines become spaces."""
    parts = _CODE_SPAN.split(" ".join(str(value).split()))
    escaped = []
    for index, part in enumerate(parts):
        if index % 2:  # a code span: Markdown escapes its content itself; a pipe would still split a table cell
            escaped.append(part)
        else:
            escaped.append(html.escape(part, quote=False).replace("*", r"\*").replace("|", r"\|"))
    return "".join(escaped)


def code(value: str) -> str:
    """``value`` as one inline code span (a value holding backticks gets a longer fence)."""
    value = " ".join(str(value).split())
    fence = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; the cells must already be Markdown (see :func:`text`, :func:`code`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return "\n".join(lines)
