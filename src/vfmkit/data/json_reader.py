"""The one reader of JSON dataset files (COCO instances, COCO panoptic, captions, class lists).

:func:`read_json` loads a file (UTF-8, with or without a byte-order mark) and turns every failure into one
:class:`~vfmkit.errors.DataError` line naming the file (and the line and column of a syntax error).
:class:`JsonReader` gives typed access to the loaded value: every missing key, wrong type, non-finite number or
duplicate id is reported with the file, the list, the index and the key, e.g.
``panoptic_train.json: annotations[3] (file_name p0003.png): segments_info[1]: missing key 'category_id'``.
Every task's JSON reader uses them, so a malformed file never surfaces as a KeyError or TypeError traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vfmkit.errors import DataError


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Load a JSON file.

    Args:
        path: the file.
        what: what the file is, for the messages (``"COCO annotation file"``, ``"panoptic JSON"`` ...).

    Raises:
        DataError: a missing file, an unreadable or non-UTF-8 file, or invalid JSON (line and column).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({' '.join(str(err).split())}; expected a UTF-8 {what})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None


def _type_names(kind: type | tuple) -> str:
    return kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)


class JsonReader:
    """Typed access to a loaded JSON value, with errors that name the file, the place and the key.

    ``where`` arguments are human-readable places such as ``"images[3]"`` or ``"annotations[2] (id 7)"``.
    """

    def __init__(self, file: str | Path):
        self.file = Path(file)

    def fail(self, where: str, problem: str) -> DataError:
        """The error to raise for ``problem`` at ``where``."""
        return DataError(f"{self.file}: {where}: {problem}")

    def object(self, data: Any, where: str = "top level", expected: str = "an object") -> dict:
        """``data`` itself, refused unless it is a JSON object."""
        if not isinstance(data, dict):
            raise self.fail(where, f"expected {expected}, got {_json_type(data)}")
        return data

    def list_of(self, data: Any, key: str, where: str = "top level", expected: str = "an object") -> list:
        """``data[key]``, which must exist and be a list."""
        self.object(data, where, expected)
        if key not in data:
            raise self.fail(where, f"missing key '{key}'")
        if not isinstance(data[key], list):
            raise self.fail(
                key if where == "top level" else f"{where}: {key}", f"expected a list, got {_json_type(data[key])}"
            )
        return data[key]

    def get(self, item: Any, where: str, key: str, kind: type | tuple, default: Any = ...) -> Any:
        """``item[key]`` of type ``kind`` (``int`` refuses booleans and floats; ``float`` takes ints; numbers must
        be finite); ``default`` when the key is absent, if given."""
        self.object(item, where)
        if key not in item:
            if default is not ...:
                return default
            raise self.fail(where, f"missing key '{key}'")
        return self.check(item[key], where, key, kind)

    def check(self, value: Any, where: str, key: str, kind: type | tuple) -> Any:
        """``value`` (found under ``key``) if it has type ``kind``."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and int not in kinds:
            kinds = (*kinds, int)
        numeric = any(k in (int, float) for k in kinds)
        if (isinstance(value, bool) and bool not in kinds and numeric) or not isinstance(value, kinds):
            raise self.fail(where, f"key '{key}' must be {_type_names(kind)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(where, f"key '{key}' must be a finite number, got {value!r}")
        return value

    def numbers(self, value: Any, where: str, key: str) -> list[float]:
        """A list of finite numbers (booleans refused)."""
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise self.fail(where, f"key '{key}' must be a list of numbers, got {_preview(value)}")
        if not all(math.isfinite(v) for v in value):
            raise self.fail(where, f"key '{key}' holds a number that is not finite: {_preview(value)}")
        return [float(v) for v in value]

    def unique_id(self, seen: dict, value: Any, where: str, what: str, first: str = "") -> None:
        """Refuse an id already in ``seen`` (naming where it appeared first), else add it."""
        if value in seen:
            raise self.fail(where, f"duplicate {what} {value!r} (also {seen[value]}); ids must be unique")
        seen[value] = first or where


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    if _is_number(value):
        return f"the number {value!r}"
    return names.get(type(value), type(value).__name__)


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
