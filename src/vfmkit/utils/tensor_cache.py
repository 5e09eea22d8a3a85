"""One cache entry = one safetensors file that proves its own content; anything that does not verify is a miss.

Every on-disk tensor cache of vfmkit (the classification / CLIP feature cache, the distillation teacher-output cache)
reads and writes its entries here, so they share one policy:

- The file's metadata carries the format (:data:`FORMAT`), the layout (every tensor's name, dtype and shape), a
  sha256 of the tensors (:func:`content_hash`: names, dtypes, shapes and bytes) and the caller's key facts (a JSON
  object of strings, numbers and lists: what the entry was computed from).
- :func:`read_entry` returns the tensors only when the file decodes, its layout is exactly the one the caller
  expects, the hash matches the bytes and the key facts are the caller's. Anything else (missing, undecodable,
  truncated, other names / dtypes / shapes, a well-formed file with other values, other key facts) is a miss, with
  the reason; the caller rebuilds the entry and :meth:`CacheStats.record` counts it.
- :func:`write_entry` writes atomically (:func:`vfmkit.utils.atomic.atomic_output`); a disk error raises an
  ``OSError`` naming the entry's path (``cannot write <path>: No space left on device`` in the CLI), never a raw
  ``SafetensorError``.

Example::

    layout = {"summary": (torch.float32, (len(files), 768))}
    stats = CacheStats()
    lookup = read_entry(path, layout, facts)
    stats.record(lookup)
    tensors = lookup.tensors if lookup.hit else None
    if tensors is None:
        tensors = {"summary": compute()}
        write_entry(path, tensors, facts)
    print(stats.describe("feature cache"))  # feature cache: 0 hits, 1 damaged entry rebuilt (...)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vfmkit.utils.atomic import atomic_output

FORMAT = "vfmkit-tensor-cache-1"
"""The ``format`` metadata value; entries of another format (e.g. written before this helper) are misses."""

Layout = Mapping[str, tuple[torch.dtype, tuple[int, ...]]]
"""Tensor name -> (dtype, shape) an entry must hold exactly."""


def content_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 of the tensors: for each name in sorted order, the name, dtype, shape and raw bytes (CPU)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def layout_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Name -> (dtype, shape) of a dict of tensors."""
    return {name: (tensor.dtype, tuple(tensor.shape)) for name, tensor in tensors.items()}


def _layout_text(layout: Layout) -> str:
    return json.dumps({name: [str(dtype), list(shape)] for name, (dtype, shape) in sorted(layout.items())})


def _facts_text(facts: Mapping[str, Any]) -> str:
    return json.dumps(facts, sort_keys=True)


@dataclass(frozen=True)
class Lookup:
    """The outcome of :func:`read_entry`.

    Attributes:
        tensors: the entry's tensors (exactly the expected layout) on a hit, else None.
        problem: why an existing file was rejected (e.g. ``sha256 mismatch``); None on a hit or when no file exists.
    """

    tensors: dict[str, torch.Tensor] | None
    problem: str | None = None

    @property
    def hit(self) -> bool:
        return self.tensors is not None

    @property
    def damaged(self) -> bool:
        """A file was there but did not verify (it is rebuilt)."""
        return self.problem is not None


def read_entry(path: str | Path, layout: Layout, facts: Mapping[str, Any]) -> Lookup:
    """Read and verify one entry (see the module docstring); never raises for a bad or unreadable file.

    Args:
        path: the entry's file.
        layout: the exact names, dtypes and shapes expected.
        facts: the key facts the entry must have been written with (JSON values).

    Returns:
        A hit with the tensors, a plain miss (no file), or a damaged miss with the reason.
    """
    path = Path(path)
    if not path.is_file():
        return Lookup(None)
    try:
        metadata, tensors = _load(path)
    except Exception as exc:  # safetensors, OS and decoding errors all mean: not a usable entry
        return Lookup(None, f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
    problem = _problem(metadata, tensors, layout, facts)
    return Lookup(None, problem) if problem else Lookup(tensors)


def _load(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not a dict
    return metadata, tensors


def _problem(
    metadata: dict[str, str], tensors: dict[str, torch.Tensor], layout: Layout, facts: Mapping[str, Any]
) -> str | None:
    """Why a decoded entry is not usable (None: it is)."""
    if metadata.get("format") != FORMAT:
        return f"not a {FORMAT} entry"
    if metadata.get("facts") != _facts_text(facts):
        return "written for other key facts"
    actual = _layout_text(layout_of(tensors))
    if actual != _layout_text(layout):
        return f"other tensors than expected (has {actual}, expected {_layout_text(layout)})"
    if metadata.get("layout") != actual:
        return "its recorded layout does not match its tensors"
    if metadata.get("sha256") != content_hash(tensors):
        return "sha256 mismatch (the tensors changed after the entry was written)"
    return None


def write_entry(path: str | Path, tensors: Mapping[str, torch.Tensor], facts: Mapping[str, Any]) -> Path:
    """Write one entry atomically: the tensors (moved to the CPU, made contiguous) with their layout, content hash
    and the key facts in the metadata.

    Raises:
        OSError: the entry cannot be written (full or read-only disk ...); the error names ``path``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    metadata = {
        "format": FORMAT,
        "layout": _layout_text(layout_of(tensors)),
        "sha256": content_hash(tensors),
        "facts": _facts_text(facts),
    }
    with atomic_output(path) as tmp:  # names `path` in any disk error (safetensors' own error included)
        save_file(tensors, str(tmp), metadata=metadata)
    return path


@dataclass
class CacheStats:
    """Counts of a cache's lookups: ``hits``, ``misses`` (entries computed, damaged ones included) and ``damaged``
    (files that were there but did not verify, rebuilt), with the first damaged entry's path and reason."""

    hits: int = 0
    misses: int = 0
    damaged: int = 0
    example: str | None = None

    def record(self, lookup: Lookup, path: str | Path | None = None) -> None:
        """Count one lookup (``path`` names the entry in :attr:`example` when it was damaged)."""
        if lookup.hit:
            self.hits += 1
            return
        self.misses += 1
        if lookup.damaged:
            self.damaged += 1
            if self.example is None:
                self.example = f"{Path(path).name + ': ' if path is not None else ''}{lookup.problem}"

    def add(self, hits: int = 0, misses: int = 0, damaged: int = 0, example: str | None = None) -> None:
        """Add counts made elsewhere (e.g. in DataLoader workers, reported with the batches)."""
        self.hits += hits
        self.misses += misses
        self.damaged += damaged
        if self.example is None and example:
            self.example = example

    def describe(self, what: str) -> str:
        """One line, e.g. ``feature cache: 120 hits, 3 damaged entries rebuilt (e.g. x.safetensors: sha256
        mismatch ...)``; entries computed for the first time are counted as ``computed``."""
        parts = [f"{self.hits} hit{'' if self.hits == 1 else 's'}"]
        if self.misses - self.damaged:
            parts.append(f"{self.misses - self.damaged} computed")
        if self.damaged:
            parts.append(f"{self.damaged} damaged {'entry' if self.damaged == 1 else 'entries'} rebuilt")
        text = f"{what}: {', '.join(parts)}"
        return f"{text} (e.g. {self.example})" if self.damaged and self.example else text
