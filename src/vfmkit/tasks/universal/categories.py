"""Categories of a universal-segmentation dataset: original ids (as in the files, any sparse ids) <-> contiguous
indices 0..K-1 (what the model predicts), things vs stuff; and the segments of one image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

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
