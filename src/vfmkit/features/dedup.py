"""``vfm dedup``: groups of near-duplicate images, by cosine similarity of their embeddings.

Every row is a query: a range search (cosine >= threshold) on the index (flat and IVF indexes; HNSW, which has no
range search, by a k-NN search whose k doubles until the neighbours fall below the threshold; without an index, an
exact in-memory index of the vectors). The pairs found are joined by union-find into groups (connected components),
so a chain a ~ b ~ c is one group even when a and c are further apart.

Outputs: a CSV with columns ``group`` (1 = the largest group), ``path``, ``score`` (cosine to the group's first
image, the one of the lowest row; 1.0 for the first itself), and a contact-sheet PNG of the largest groups (one row
of thumbnails per group, its number and size on the left).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vfmkit.data.webdataset import parse_image_ref
from vfmkit.errors import DataError, VfmError
from vfmkit.features.index import normalized, require_faiss
from vfmkit.features.progress import Progress
from vfmkit.features.reader import RowArray, open_embeddings
from vfmkit.features.search import Collection
from vfmkit.utils.atomic import atomic_write_text, save_image_atomically


@dataclass
class DuplicateGroup:
    """Rows of near-duplicate images, the first (lowest row) first, with each one's cosine to the first."""

    rows: list[int]
    paths: list[str]
    scores: list[float]


@dataclass
class DedupResult:
    """Groups (largest first), the number of similar pairs found, and the files written."""

    groups: list[DuplicateGroup]
    num_pairs: int
    num_rows: int
    csv_path: Path | None = None
    sheet_path: Path | None = None
    threshold: float = 0.0
    notes: list[str] = field(default_factory=list)


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, size: int) -> None:
        self.parent = np.arange(size)
        self.size = np.ones(size, dtype=np.int64)

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return int(item)

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return
        if self.size[root_a] < self.size[root_b]:
            root_a, root_b = root_b, root_a
        self.parent[root_b] = root_a
        self.size[root_a] += self.size[root_b]


def _vectors(collection: Collection) -> RowArray:
    """The collection's vectors as a lazy row view (from the embeddings the index was built on)."""
    if collection.index is None:
        return collection.view[collection.vectors]
    source = Path(collection.index.meta["embeddings"])
    view = open_embeddings(source)
    rows = view[collection.vectors]
    if len(rows) != len(collection.paths):
        raise DataError(f"{source} now holds {len(rows)} rows, the index {len(collection.paths)}: rebuild the index")
    return rows


def _neighbours(index, block: np.ndarray, threshold: float, use_range: bool) -> list[np.ndarray]:
    """For each query row, the ids of the rows with cosine >= threshold."""
    if use_range:
        limits, scores, ids = index.range_search(block, threshold)
        return [
            ids[limits[i] : limits[i + 1]][scores[limits[i] : limits[i + 1]] >= threshold] for i in range(len(block))
        ]
    found, k = [None] * len(block), 16
    pending = np.arange(len(block))
    while len(pending):
        scores, ids = index.search(block[pending], min(k, index.ntotal))
        full = (scores[:, -1] >= threshold) & (k < index.ntotal)
        for position, query in enumerate(pending):
            if not full[position]:
                found[query] = ids[position][(scores[position] >= threshold) & (ids[position] >= 0)]
        pending, k = pending[full], k * 2
    return found


def find_duplicates(
    location: str | Path, threshold: float = 0.95, index: str | Path | None = None, chunk: int = 4096,
    progress: bool = True,
) -> DedupResult:  # fmt: skip
    """Group near-duplicates of an embeddings folder/file (through its index when it has one).

    Raises:
        VfmError: a threshold outside (0, 1], FAISS missing, unreadable embeddings or index.
    """
    if not 0.0 < threshold <= 1.0:
        raise VfmError(f"--threshold is a cosine similarity in (0, 1], got {threshold}")
    faiss = require_faiss()
    collection = Collection(location, index)
    rows = _vectors(collection)
    if collection.index is not None:
        search_index, use_range = collection.index.index, collection.kind != "hnsw"
    else:
        search_index, use_range = faiss.IndexFlatIP(collection.dim), True
        for _, block in rows.chunks(65536):
            search_index.add(normalized(block))
    sets, pairs = UnionFind(len(rows)), 0
    bar = Progress(len(rows), "dedup", enabled=progress, unit="vec")
    for start, block in rows.chunks(chunk):
        for offset, ids in enumerate(_neighbours(search_index, normalized(block), threshold, use_range)):
            for other in ids[ids > start + offset].tolist():
                sets.union(start + offset, other)
                pairs += 1
        bar.update(len(block))
    bar.close()
    groups = _groups(sets, rows, collection.paths)
    return DedupResult(groups, pairs, len(rows), threshold=threshold)


def _groups(sets: UnionFind, rows, paths: list[str]) -> list[DuplicateGroup]:
    members: dict[int, list[int]] = {}
    for row in range(len(paths)):
        if sets.size[sets.find(row)] > 1:
            members.setdefault(sets.find(row), []).append(row)
    groups = []
    for group_rows in members.values():
        vectors = normalized(rows[np.array(group_rows)])
        scores = (vectors @ vectors[0]).astype(float)
        groups.append(DuplicateGroup(group_rows, [paths[r] for r in group_rows], [round(s, 6) for s in scores]))
    groups.sort(key=lambda g: (-len(g.rows), g.rows[0]))
    return groups


def write_csv(result: DedupResult, path: str | Path) -> Path:
    """``group,path,score`` rows (see the module docstring), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "path", "score"])
    for number, group in enumerate(result.groups, start=1):
        for member, score in zip(group.paths, group.scores, strict=True):
            writer.writerow([number, member, f"{score:.6f}"])
    path = Path(path)
    atomic_write_text(path, buffer.getvalue())
    result.csv_path = path
    return path


def _thumbnail(path: str, side: int) -> Image.Image:
    try:
        image = parse_image_ref(path).load()
    except VfmError:
        return Image.new("RGB", (side, side), (90, 0, 0))  # an image that vanished since it was embedded
    image.thumbnail((side, side))
    tile = Image.new("RGB", (side, side), (255, 255, 255))
    tile.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return tile


def write_contact_sheet(
    result: DedupResult, path: str | Path, max_groups: int = 12, per_group: int = 8, side: int = 96
) -> Path | None:
    """A PNG with one row per group (the ``max_groups`` largest; ``per_group`` thumbnails of ``side`` px); None
    when there is no group."""
    groups = result.groups[:max_groups]
    if not groups:
        return None
    label, gap = 110, 4
    sheet = Image.new("RGB", (label + per_group * (side + gap), len(groups) * (side + gap)), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    for number, group in enumerate(groups):
        top = number * (side + gap)
        draw.text((6, top + side // 2 - 12), f"group {number + 1}\n{len(group.rows)} images", fill=(0, 0, 0))
        for column, member in enumerate(group.paths[:per_group]):
            sheet.paste(_thumbnail(member, side), (label + column * (side + gap), top))
    path = save_image_atomically(sheet, Path(path))
    result.sheet_path = path
    return path
