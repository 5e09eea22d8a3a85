"""Reading embeddings back without loading them: :func:`open_embeddings` over a shard folder or a single file.

Rows are memory-mapped from the safetensors files (numpy ``memmap`` at the offsets of the safetensors header), so
opening a folder of any size costs the parquet path columns only; indexing a tensor reads just the rows asked for.

Example::

    emb = open_embeddings("emb/")          # or "feats.safetensors"
    emb.paths[:3]                          # image of each row (file path or <shard>.tar/<member>)
    summary = emb["summary"]               # lazy (N, C) view
    summary[10:20]                         # float32 numpy array (10, C)
    for start, block in summary.chunks(65536): ...
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from vfmkit.errors import DataError
from vfmkit.features.shards import MANIFEST, read_manifest

_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


@dataclass(frozen=True)
class _Part:
    """One memory-mapped tensor of one file: ``array`` (rows, ...) as stored, ``bf16`` when the bits are bfloat16."""

    array: np.ndarray
    bf16: bool


def map_safetensors(path: Path) -> dict[str, _Part]:
    """Memory-map every tensor of a safetensors file (zero-row tensors become empty arrays).

    Raises:
        DataError: a file that is not a complete safetensors file of float tensors.
    """
    try:
        with open(path, "rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
        file_size = path.stat().st_size
    except (OSError, ValueError, struct.error) as exc:
        raise DataError(f"cannot read embeddings file {path}: {exc}") from None
    parts = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in _NUMPY_DTYPES:
            raise DataError(f"{path}: tensor {key!r} has dtype {info['dtype']} (float tensors expected)")
        begin, end = info["data_offsets"]
        if 8 + header_size + end > file_size:
            raise DataError(f"{path} is truncated (tensor {key!r} ends past the end of the file)")
        dtype, shape = _NUMPY_DTYPES[info["dtype"]], tuple(info["shape"])
        if end == begin:
            array = np.zeros(shape, dtype=dtype)
        else:
            array = np.memmap(path, dtype=dtype, mode="r", offset=8 + header_size + begin, shape=shape)
        parts[key] = _Part(array, info["dtype"] == "BF16")
    return parts


class RowArray:
    """A lazy (N, ...) view of one tensor across files: ``len``, ``shape``, and ``view[i]`` / ``view[a:b]`` /
    ``view[index_array]`` returning float32 numpy arrays (fp16/bf16 storage is converted on read)."""

    def __init__(self, parts: list[_Part]) -> None:
        self.parts = [p for p in parts if p.array.shape[0]]
        self.offsets = np.cumsum([0] + [p.array.shape[0] for p in self.parts])
        row_shape = self.parts[0].array.shape[1:] if self.parts else ()
        self.shape = (int(self.offsets[-1]), *row_shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self._range(start, stop)
            return self._rows(np.arange(start, stop, step))
        if isinstance(index, (int, np.integer)):
            position = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} rows")
            return self._range(position, position + 1)[0]
        return self._rows(np.asarray(index, dtype=np.int64))

    def _range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(stop - start, 0), *self.shape[1:]), dtype=np.float32)
        for part_index, part in enumerate(self.parts):
            first, last = self.offsets[part_index], self.offsets[part_index + 1]
            low, high = max(start, first), min(stop, last)
            if low < high:
                out[low - start : high - start] = _as_float32(part, low - first, high - first)
        return out

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((rows.size, *self.shape[1:]), dtype=np.float32)
        owner = np.searchsorted(self.offsets, rows, side="right") - 1
        for part_index in np.unique(owner):
            where = np.nonzero(owner == part_index)[0]
            local = rows[where] - self.offsets[part_index]
            part = self.parts[part_index]
            values = part.array[local]
            out[where] = _float32(values, part.bf16)
        return out

    def chunks(self, size: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, float32 block)`` over all rows, ``size`` rows at a time (the memory bound of a scan)."""
        for start in range(0, len(self), size):
            yield start, self._range(start, min(start + size, len(self)))


def _as_float32(part: _Part, low: int, high: int) -> np.ndarray:
    return _float32(part.array[low:high], part.bf16)


def _float32(values: np.ndarray, bf16: bool) -> np.ndarray:
    """Stored rows as float32 (bfloat16 bits arrive as uint16)."""
    if bf16:
        return torch.from_numpy(np.array(values, dtype=np.uint16)).view(torch.bfloat16).float().numpy()
    return values.astype(np.float32, copy=False)


class EmbeddingsView:
    """Embeddings on disk, lazily: ``keys`` (tensor names), ``paths`` (image of each row, row order), ``view[key]``
    (a :class:`RowArray`), ``skipped`` (``(path, reason)`` of the items that were left out) and ``facts`` (the
    manifest or single-file index record: model, resolution, what, runtime ...)."""

    def __init__(self, location: Path, facts: dict, tensors: dict[str, RowArray], paths_reader) -> None:
        self.location, self.facts, self._tensors = location, facts, tensors
        self._paths_reader = paths_reader
        self._paths: list[str] | None = None
        self._skipped: list[tuple[str, str]] | None = None

    @property
    def keys(self) -> list[str]:
        return list(self._tensors)

    def __getitem__(self, key: str) -> RowArray:
        if key not in self._tensors:
            raise DataError(f"{self.location} has no tensor {key!r} (it has {', '.join(self._tensors) or 'none'})")
        return self._tensors[key]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths, self._skipped = self._paths_reader()
        return self._paths

    @property
    def skipped(self) -> list[tuple[str, str]]:
        if self._skipped is None:
            self._paths, self._skipped = self._paths_reader()
        return self._skipped


def open_embeddings(path: str | Path) -> EmbeddingsView:
    """Open embeddings written by ``vfm embed``: a shard folder (its ``manifest.json`` must say complete) or a
    single ``.safetensors`` file with its ``.index.json``.

    Raises:
        DataError: nothing there, an incomplete folder (the message says to rerun the command), or torn files.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return _open_folder(path)
    if path.is_file():
        return _open_single_file(path)
    raise DataError(f"no embeddings at {path} (expected a folder written by vfm embed --out DIR, or a .safetensors)")


def _open_folder(folder: Path) -> EmbeddingsView:
    manifest = read_manifest(folder)
    if manifest is None:
        raise DataError(f"{folder} has no {MANIFEST} (expected a folder written by vfm embed --out {folder})")
    if not manifest.get("complete"):
        raise DataError(f"{folder} is incomplete (a vfm embed run stopped early): rerun the same command to finish it")
    mapped = [map_safetensors(folder / shard["safetensors"]) for shard in manifest["shards"]]
    for shard, parts in zip(manifest["shards"], mapped, strict=True):
        rows = {part.array.shape[0] for part in parts.values()}
        if rows and rows != {shard["rows"]}:
            raise DataError(f"{folder / shard['safetensors']} holds {rows} rows, the manifest says {shard['rows']}")
    tensors = {key: RowArray([parts[key] for parts in mapped if key in parts]) for key in manifest.get("tensors", {})}

    def read_paths() -> tuple[list[str], list[tuple[str, str]]]:
        paths, skipped = [], []
        for shard in manifest["shards"]:
            table = pq.read_table(folder / shard["parquet"], columns=["path", "row", "skipped", "reason"]).to_pydict()
            entries = list(zip(table["path"], table["row"], table["skipped"], table["reason"], strict=True))
            paths.extend(p for _, p in sorted((row, p) for p, row, gone, _ in entries if not gone))
            skipped.extend((p, why) for p, _, gone, why in entries if gone)
        return paths, skipped

    return EmbeddingsView(folder, manifest, tensors, read_paths)


def _open_single_file(path: Path) -> EmbeddingsView:
    index_file = path.with_name(path.stem + ".index.json")
    try:
        record = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {index_file}, the row order of {path}: {exc}") from None
    parts = map_safetensors(path)
    tensors = {key: RowArray([part]) for key, part in parts.items()}
    files = [str(f) for f in record.get("files", [])]
    skipped = [(item["path"], item["error"]) for item in record.get("skipped", [])]
    for key, view in tensors.items():
        if len(view) != len(files):
            raise DataError(f"{path}: tensor {key!r} has {len(view)} rows, {index_file.name} lists {len(files)} files")
    return EmbeddingsView(path, record, tensors, lambda: (files, skipped))
