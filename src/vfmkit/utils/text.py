"""Message text helpers: library error text turned into one short line for a user-facing message."""

from __future__ import annotations


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs, newlines included, become one space), cut at a word boundary to at
    most ``limit`` characters with ``...`` appended when cut."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 3].rsplit(" ", 1)[0] if " " in flat[: limit - 3] else flat[: limit - 3]
    return cut.rstrip(" ,;:") + "..."


def error_reason(error: BaseException, limit: int = 300) -> str:
    """A short one-line reason for an exception: its first non-empty line (see :func:`one_line`), or the exception's
    type name when it has no text (e.g. ``EOFError()`` from an empty file)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return one_line(lines[0], limit) if lines else type(error).__name__
