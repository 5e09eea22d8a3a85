"""A cache of exported backbone graphs, so ``--runtime onnxruntime`` exports a model once and then reuses the file.

Location: ``$VFMKIT_CACHE/onnx`` when ``VFMKIT_CACHE`` is set, else ``$XDG_CACHE_HOME/vfmkit/onnx`` (by default
``~/.cache/vfmkit/onnx``). Each entry is ``<model>-<H>x<W>-opset<N>-<fp32|int8>-<key>.onnx`` (+ ``.onnx.data`` for
models above ~1.8 GB) and a ``.json`` record written last, holding the full key and the sha256 of the file.

- The key covers the weights fingerprint (sha256 of every tensor of the state dict), the resolution, the opset,
  int8, the adaptor heads, and the vfmkit version: new weights or a new vfmkit give a new entry, and writing it
  deletes the entries of the same model, resolution, opset and precision made from other weights.
- An entry is used only when its record exists, names the same key, and the file's sha256 matches: a truncated,
  edited or half-written file is deleted and rebuilt, never loaded.
- Files are written atomically (staged beside, then ``os.replace``), so concurrent runs never see a partial file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vfmkit._version import __version__
from vfmkit.errors import VfmError
from vfmkit.export.onnx import write_atomically
from vfmkit.utils.folders import cache_home

logger = logging.getLogger("vfmkit.export")

GRAPH_FORMAT = 1
"""Bumped when the exported backbone graph changes shape or meaning, to invalidate older entries."""


def cache_root() -> Path:
    """The folder of cached ONNX graphs: ``$VFMKIT_CACHE/onnx`` or ``${XDG_CACHE_HOME:-~/.cache}/vfmkit/onnx``
    (:func:`vfmkit.utils.folders.cache_home`)."""
    return cache_home() / "onnx"


@dataclass(frozen=True)
class ExportKey:
    """What a cached graph depends on.

    Attributes:
        model_id: the model id or path the backbone was loaded from (for the file name and the record).
        fingerprint: sha256 of the weights (:func:`vfmkit.weights.fingerprint.weights_fingerprint`).
        resolution: (H, W) of the graph input.
        opset: ONNX operator set.
        int8: dynamically quantized weights (:func:`vfmkit.export.quantize.quantize_int8`).
        adaptors: the adaptor heads exported as extra outputs.
    """

    model_id: str
    fingerprint: str
    resolution: tuple[int, int]
    opset: int
    int8: bool = False
    adaptors: tuple[str, ...] = ()

    def digest(self) -> str:
        """Hex sha256 of the key, the vfmkit version and the graph format."""
        payload = {**asdict(self), "vfmkit": __version__, "graph_format": GRAPH_FORMAT}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def prefix(self) -> str:
        """File-name prefix shared by the entries of one model, resolution, opset and precision."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model_id).strip("._") or "model"
        height, width = self.resolution
        heads = "".join(f"+{name}" for name in self.adaptors)
        return f"{slug[:60]}{heads}-{height}x{width}-opset{self.opset}-{'int8' if self.int8 else 'fp32'}"

    @property
    def stem(self) -> str:
        return f"{self.prefix}-{self.digest()[:16]}"

    def fp32(self) -> ExportKey:
        """The key of the fp32 graph an int8 graph is made from."""
        return replace(self, int8=False)


class OnnxCache:
    """Cached ONNX graphs under ``root`` (default :func:`cache_root`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def path_for(self, key: ExportKey) -> Path:
        """Where the graph of ``key`` lives (whether or not it exists)."""
        return self.root / f"{key.stem}.onnx"

    def lookup(self, key: ExportKey) -> Path | None:
        """The cached graph of ``key``, or None when absent; an invalid entry is deleted (and logged) and gives None."""
        path = self.path_for(key)
        record = path.with_suffix(".json")
        if not path.exists() and not record.exists():
            return None
        problem = self._problem(key, path, record)
        if problem is None:
            return path
        logger.warning("cached ONNX graph %s is unusable (%s); rebuilding it", path, problem)
        self.discard(key)
        return None

    def _problem(self, key: ExportKey, path: Path, record: Path) -> str | None:
        if not path.is_file():
            return "the .onnx file is missing"
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "its record is missing or unreadable"
        if saved.get("key") != key.digest():
            return "its record belongs to another key"
        if saved.get("sha256") != file_sha256(path):
            return "the file changed since it was written (sha256 mismatch)"
        return None

    def store(self, key: ExportKey, build: Callable[[Path], object]) -> Path:
        """Build the graph of ``key`` with ``build(path)`` (which must write ``path`` atomically), record it, and
        delete other entries of the same prefix (older weights). Returns the path."""
        path = self.path_for(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VfmError(f"cannot create the ONNX cache folder {self.root}: {exc.strerror or exc}") from exc
        self.discard(key)
        build(path)
        record = {"key": key.digest(), "sha256": file_sha256(path), **asdict(key), "vfmkit_version": __version__}
        write_atomically(path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
        self._prune(key)
        return path

    def get_or_build(self, key: ExportKey, build: Callable[[Path], object]) -> tuple[Path, bool]:
        """The cached graph of ``key``, built first on a miss; returns (path, built)."""
        path = self.lookup(key)
        return (path, False) if path is not None else (self.store(key, build), True)

    def discard(self, key: ExportKey) -> None:
        """Delete the entry of ``key`` (record first, so a half-deleted entry is never valid)."""
        path = self.path_for(key)
        for file in (path.with_suffix(".json"), path, path.with_name(f"{path.name}.data")):
            file.unlink(missing_ok=True)

    def _prune(self, key: ExportKey) -> None:
        """Delete the entries of the same prefix made from other weights (or another vfmkit version)."""
        for other in self.root.glob(f"{glob_escape(key.prefix)}-*.onnx"):
            if other.stem != key.stem and re.fullmatch(r"[0-9a-f]{16}", other.stem.rsplit("-", 1)[-1]):
                for file in (other.with_suffix(".json"), other, other.with_name(f"{other.name}.data")):
                    file.unlink(missing_ok=True)
                logger.info("removed stale cached ONNX graph %s", other)


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file and of its ``.data`` companion when present."""
    digest = hashlib.sha256()
    for file in (path, path.with_name(f"{path.name}.data")):
        if file.is_file():
            with open(file, "rb") as handle:
                for block in iter(lambda handle=handle: handle.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()
