"""What ``vfm embed`` reads: image files and WebDataset shard members, as one sorted, deterministic item list.

A source is a folder (walked by :func:`vfmkit.data.images.iter_files`: symlinked folders followed once, hidden
entries skipped), a glob pattern, a text file of paths (one per line), one image file, or one or more WebDataset
``.tar`` shards (a ``.tar`` file, a glob such as ``shards/*.tar``, ``.tar`` files inside a folder or named in a list
file). Image files and shards are sorted by path (a list file keeps its own order); each shard expands, in place, to
its image members in tar order. Every process that lists the same source gets the same items in the same order, which
is what lets ranks of a distributed run take their slices without talking to each other.

Members a damaged shard cuts off, and a shard that cannot be listed at all, become :class:`ListingProblem` items:
they are reported and recorded like unreadable images, never fatal for the other shards.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vfmkit.data.images import IMAGE_EXTENSIONS, glob_files, iter_files, list_image_files
from vfmkit.data.webdataset import ImageRef, list_shard_images
from vfmkit.errors import DataError

SHARD_SUFFIX = ".tar"


@dataclass(frozen=True)
class ListingProblem:
    """An item that failed before decoding (a cut-off shard member, an unlistable shard): its name and reason."""

    name: str
    error: str

    def __str__(self) -> str:
        return self.name


EmbedItem = Path | ImageRef | ListingProblem
"""One entry of a source: an image file, a shard member, or a listing problem."""


def item_name(item: EmbedItem) -> str:
    """The string recorded for an item: the file path, ``<shard>.tar/<member>``, or the problem's name."""
    return str(item)


def list_embed_items(source: str | Path | Sequence[str | Path]) -> list[EmbedItem]:
    """The items of an image source (see the module docstring), in their deterministic order.

    Args:
        source: a folder, glob pattern, list file, image file or ``.tar`` shard; or a sequence of image paths /
            shards.

    Raises:
        DataError: the source does not exist or holds neither images nor shards.
    """
    if not isinstance(source, (str, Path)):
        return _expand([Path(s) for s in source])
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(p for p in iter_files(path) if _is_image(p) or p.suffix.lower() == SHARD_SUFFIX)
        if not found:
            list_image_files(path)  # raises the walker's "no images found" error
        return _expand(found)
    if text.lower().endswith(SHARD_SUFFIX) and glob.has_magic(text):
        shards = glob_files(text)
        if not shards:
            raise DataError(f"no .tar shards match {text!r} (expected WebDataset shards)")
        return _expand(shards)
    if path.suffix.lower() == SHARD_SUFFIX:
        if not path.is_file():
            raise DataError(f"WebDataset shard {text!r} does not exist")
        return _expand([path])
    return _expand(list_image_files(source))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _expand(paths: list[Path]) -> list[EmbedItem]:
    """Image paths stay as they are; each ``.tar`` becomes its image members (and its listing problems)."""
    items: list[EmbedItem] = []
    for path in paths:
        if path.suffix.lower() != SHARD_SUFFIX:
            items.append(path)
            continue
        listed = list_shard_images(path)
        items.extend(listed.images)
        items.extend(ListingProblem(name, error) for name, error in listed.problems)
    if not items:
        raise DataError("the image source lists no images (its .tar shards hold no jpg/png/webp members)")
    return items


def listing_fingerprint(items: Sequence[EmbedItem]) -> str:
    """sha256 (hex) of the item names in order: equal listings give equal fingerprints."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item_name(item).encode("utf-8", errors="surrogateescape") + b"\n")
    return digest.hexdigest()
