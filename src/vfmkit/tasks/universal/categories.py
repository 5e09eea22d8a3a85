"""Categories of a universal-segmentation dataset: original ids (as in the files, any sparse ids) <-> contiguous
indices 0..K-1 (what the model predicts), things vs stuff; and the segments of one image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from vfmkit.errors import DataError

IGNORE = -1
"""Semantic-map value of pixels without a class (VOID)."""


@dataclass(frozen=True)
class Category:
    """A category as in the files: original ``id``, ``name``, ``isthing``, display ``color`` (or None)."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] | None = None


class CategoryTable:
    """The categories in contiguous order (index k = position) with their original ids.

    Args:
        categories: the categories, in the order that defines the contiguous indices.

    Raises:
        ValueError: empty, or duplicate ids or names.
    """

    def __init__(self, categories: Sequence[Category]):
        self.categories = list(categories)
        if not self.categories:
            raise ValueError("no categories")
        for what in ("id", "name"):
            values = [getattr(c, what) for c in self.categories]
            if len(set(values)) != len(values):
                raise ValueError(f"duplicate category {what}s in {values}")
        self._index = {c.id: k for k, c in enumerate(self.categories)}

    def __len__(self) -> int:
        return len(self.categories)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def isthing(self) -> list[bool]:
        """Per contiguous index: True for things."""
        return [c.isthing for c in self.categories]

    @property
    def original_ids(self) -> list[int]:
        return [c.id for c in self.categories]

    def index(self, original_id: int) -> int | None:
        """Contiguous index of an original id, or None when unknown."""
        return self._index.get(int(original_id))

    @classmethod
    def from_coco(cls, entries: Sequence[Mapping], source: Path | str) -> CategoryTable:
        """From a COCO ``categories`` list; ids must be > 0 and unique (DataError naming ``source`` otherwise)."""
        if not isinstance(entries, list) or not entries:
            raise DataError(f"{source}: 'categories' must be a non-empty list")
        categories = []
        for entry in entries:
            if "id" not in entry or "name" not in entry:
                raise DataError(f"{source}: category {entry} needs an 'id' and a 'name'")
            if int(entry["id"]) <= 0:
                raise DataError(f"{source}: category {entry['name']!r} has id {entry['id']}; ids must be > 0")
            color = entry.get("color")
            categories.append(
                Category(
                    int(entry["id"]), str(entry["name"]), bool(entry.get("isthing", 1)), tuple(color) if color else None
                )
            )
        try:
            return cls(categories)
        except ValueError as exc:
            raise DataError(f"{source}: {exc}") from exc

    def as_meta(self) -> list[dict]:
        """JSON-able list (kept in checkpoints); :meth:`from_meta` restores it."""
        return [{"id": c.id, "name": c.name, "isthing": c.isthing, "color": c.color} for c in self.categories]

    @classmethod
    def from_meta(cls, meta: Sequence[Mapping]) -> CategoryTable:
        return cls([Category(int(m["id"]), str(m["name"]), bool(m["isthing"]), m.get("color")) for m in meta])


class SegmentInfo(NamedTuple):
    """One segment of a sample: PNG ``id``, contiguous ``category``, ``iscrowd``, ``area`` (from the JSON or None).

    A named tuple (not a frozen dataclass) so batches holding it can be moved between devices by Lightning."""

    id: int
    category: int
    iscrowd: bool = False
    area: int | None = None
