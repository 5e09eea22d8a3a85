"""The sharded embeddings folder: ``part-NNNNN.safetensors`` + ``part-NNNNN.parquet`` per shard, and ``manifest.json``.

Shard ``i`` covers items ``[i * shard_size, (i + 1) * shard_size)`` of the source's item list (images and skipped
items alike), so a shard's content depends only on the listing and the settings, never on how many processes ran:

- ``part-NNNNN.safetensors``: the rows of the shard's readable images, tensors named as in the single-file layout
  (``summary`` (n, C), ``spatial`` (n, D, h, w), ``adaptor.<name>.*``), in the storage dtype (fp32, fp16 or bf16).
  Its metadata holds the run facts (JSON) and the shard number.
- ``part-NNNNN.parquet``: one row per item of the shard: ``path`` (string), ``row`` (int32 row in the safetensors
  file, null when skipped), ``width`` / ``height`` (int32 original size as decoded, EXIF rotation applied; null when
  skipped), ``skipped`` (bool), ``reason`` (string, null when read). Its schema metadata ``vfmkit`` is a JSON record
  of the shard: number, first item, item and row counts, the sha256 and byte size of the safetensors file, and the
  run facts.
- ``manifest.json``: the run facts (model id, weights fingerprint, resolution, ``what``, adaptors, runtime, storage
  dtype, shard size, source listing fingerprint, item count), ``complete`` and, once complete, the shard list (file
  names, first item, items, rows, sha256, bytes), the per-row tensor shapes, totals, the left-out items
  (``skipped``: path and reason) and the vfmkit version.

Every file is written atomically (:mod:`vfmkit.utils.atomic`): the safetensors file first, then the parquet file
that vouches for it, then (at the end of a run) the manifest; so a parquet file exists only beside a complete shard,
and a shard whose files are missing, torn or disagree is rebuilt, never counted.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

from vfmkit._version import __version__
from vfmkit.errors import DataError
from vfmkit.utils.atomic import atomic_output, atomic_write_text

FORMAT = "vfmkit.embeddings-shards/1"
MANIFEST = "manifest.json"
STORE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_SHARD_NAME = re.compile(r"^part-(\d{5,})\.(safetensors|parquet)$")
PARQUET_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("row", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("skipped", pa.bool_()),
        ("reason", pa.string()),
    ]
)


@dataclass(frozen=True)
class RunFacts:
    """What a folder's shards were computed with; a run that differs in any field may not add to the folder."""

    model: str
    weights_fingerprint: str
    resolution: tuple[int, int]
    what: str
    adaptors: tuple[str, ...]
    runtime: str
    store_dtype: str
    shard_size: int
    listing: str
    num_items: int

    def to_json(self) -> dict:
        record = asdict(self)
        record["resolution"], record["adaptors"] = list(self.resolution), list(self.adaptors)
        return record

    @classmethod
    def from_json(cls, record: dict) -> RunFacts:
        values = {f.name: record.get(f.name) for f in fields(cls)}
        values["resolution"] = tuple(values["resolution"] or ())
        values["adaptors"] = tuple(values["adaptors"] or ())
        return cls(**values)


_FACT_NAMES = {
    "model": "model",
    "weights_fingerprint": "model weights (fingerprint)",
    "resolution": "resolution",
    "what": "--what",
    "adaptors": "adaptors",
    "runtime": "runtime",
    "store_dtype": "--store-dtype",
    "shard_size": "--shard-size",
    "listing": "image listing",
    "num_items": "number of images",
}


def fact_differences(have: RunFacts, want: RunFacts) -> list[str]:
    """``name: folder <value>, this run <value>`` for each fact that differs (the listing by count or fingerprint)."""
    found = []
    for field_name, label in _FACT_NAMES.items():
        old, new = getattr(have, field_name), getattr(want, field_name)
        if old == new or (field_name == "listing" and have.num_items != want.num_items):
            continue
        if field_name == "resolution":
            old, new = "x".join(map(str, old)), "x".join(map(str, new))
        elif field_name in ("weights_fingerprint", "listing"):
            old, new = str(old)[:12], str(new)[:12]
        elif field_name == "adaptors":
            old, new = ",".join(old) or "none", ",".join(new) or "none"
        found.append(f"{label}: folder {old}, this run {new}")
    return found


def shard_stem(index: int) -> str:
    """``part-00012`` for shard 12."""
    return f"part-{index:05d}"


def shard_files(folder: Path) -> list[Path]:
    """The ``part-NNNNN.*`` files in a folder, sorted."""
    return sorted(p for p in folder.iterdir() if _SHARD_NAME.match(p.name)) if folder.is_dir() else []


@dataclass(frozen=True)
class ShardRecord:
    """What a shard's parquet metadata vouches for."""

    index: int
    first_item: int
    num_items: int
    num_rows: int
    sha256: str
    bytes: int

    @property
    def stem(self) -> str:
        return shard_stem(self.index)


def write_shard(
    folder: Path, index: int, first_item: int, tensors: dict[str, torch.Tensor], items: list[dict], facts: RunFacts
) -> ShardRecord:
    """Write shard ``index``: its tensors (rows of readable images, any float dtype, stored as ``facts.store_dtype``)
    then its parquet file (one row per item: ``path``, ``row``, ``width``, ``height``, ``skipped``, ``reason``).

    Raises:
        DataError: the folder cannot be written.
    """
    dtype = STORE_DTYPES[facts.store_dtype]
    stored = {key: value.to(dtype).contiguous() for key, value in tensors.items()}
    metadata = {"vfmkit_format": FORMAT, "shard": str(index), "facts": json.dumps(facts.to_json())}
    num_rows = next(iter(stored.values())).shape[0] if stored else 0
    target = folder / f"{shard_stem(index)}.safetensors"
    try:
        with atomic_output(target) as tmp:
            save_file(stored, str(tmp), metadata=metadata)
        record = ShardRecord(index, first_item, len(items), num_rows, file_sha256(target), target.stat().st_size)
        table = pa.Table.from_pylist(items, schema=PARQUET_SCHEMA)
        table = table.replace_schema_metadata({"vfmkit": json.dumps({**asdict(record), "facts": facts.to_json()})})
        with atomic_output(folder / f"{record.stem}.parquet") as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:
        raise DataError(f"cannot write shard {folder / shard_stem(index)}: {exc.strerror or exc}") from exc
    return record


def read_shard_record(folder: Path, index: int) -> tuple[ShardRecord, RunFacts] | None:
    """The record and facts a shard's parquet file vouches for; None when it is missing or unreadable."""
    try:
        metadata = pq.read_schema(folder / f"{shard_stem(index)}.parquet").metadata or {}
        record = json.loads(metadata[b"vfmkit"])
        facts = RunFacts.from_json(record.pop("facts"))
        return ShardRecord(**record), facts
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException):
        return None


def complete_shard(folder: Path, index: int, facts: RunFacts, verify: bool = False) -> ShardRecord | None:
    """The record of shard ``index`` when it is complete for ``facts``, else None.

    Complete: the parquet file reads, vouches for this shard number, these facts and the expected item range, and
    the safetensors file has the recorded size (and, with ``verify``, the recorded sha256).
    """
    found = read_shard_record(folder, index)
    if found is None:
        return None
    record, shard_facts = found
    first = index * facts.shard_size
    expected_items = min(facts.shard_size, facts.num_items - first)
    expected = (index, first, expected_items)
    if shard_facts != facts or (record.index, record.first_item, record.num_items) != expected:
        return None
    tensors = folder / f"{record.stem}.safetensors"
    if not tensors.is_file() or tensors.stat().st_size != record.bytes:
        return None
    if verify and file_sha256(tensors) != record.sha256:
        return None
    return record


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    """sha256 (hex) of a file, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest, None when there is none.

    Raises:
        DataError: a manifest that is not valid JSON of this format (naming the file).
    """
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable embeddings manifest ({exc}); remove it or use --overwrite") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not an embeddings manifest (format {FORMAT} expected)")
    return manifest


def write_manifest(
    folder: Path,
    facts: RunFacts,
    shards: list[ShardRecord] | None = None,
    tensors: dict | None = None,
    skipped: list[dict] | None = None,
) -> Path:
    """Write ``manifest.json``: the facts, and (``shards`` given) the complete shard list, per-row tensor shapes,
    totals and the left-out items (``[{"path", "reason"}]``)."""
    manifest: dict = {"format": FORMAT, "vfmkit_version": __version__, "complete": shards is not None}
    manifest.update(facts.to_json())
    manifest["num_shards"] = -(-facts.num_items // facts.shard_size)
    if shards is not None:
        manifest["num_rows"] = sum(s.num_rows for s in shards)
        manifest["num_skipped"] = sum(s.num_items - s.num_rows for s in shards)
        manifest["tensors"] = tensors or {}
        manifest["skipped"] = skipped or []
        manifest["shards"] = [
            {
                "safetensors": f"{s.stem}.safetensors",
                "parquet": f"{s.stem}.parquet",
                "first_item": s.first_item,
                "items": s.num_items,
                "rows": s.num_rows,
                "sha256": s.sha256,
                "bytes": s.bytes,
            }
            for s in shards
        ]
    path = folder / MANIFEST
    try:
        atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def skipped_items(folder: Path, record: ShardRecord) -> list[dict]:
    """``[{"path", "reason"}]`` of the items a complete shard left out (read from its parquet file)."""
    if record.num_rows == record.num_items:
        return []
    table = pq.read_table(folder / f"{record.stem}.parquet", columns=["path", "skipped", "reason"]).to_pydict()
    entries = zip(table["path"], table["skipped"], table["reason"], strict=True)
    return [{"path": path, "reason": reason} for path, gone, reason in entries if gone]


def remove_shards(folder: Path) -> None:
    """Delete the manifest and every ``part-NNNNN.*`` file of a folder (``--overwrite``)."""
    for path in [folder / MANIFEST, *shard_files(folder)]:
        path.unlink(missing_ok=True)
