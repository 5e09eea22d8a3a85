"""What a run records about its weights: per role (``backbone``, ``frozen_fm``, ``teacher:<name>``, ``text tower``
...), the model, where its weights came from and fingerprints of what was built and read.

The run folder keeps them in ``weights.json`` and the model card's "Weights" section lists them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from vfmkit.weights.fingerprint import weights_fingerprint
from vfmkit.weights.rule import WeightsDecision

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".tar", ".bin", ".ckpt")
"""Files of a weights folder whose sha256 is recorded (configs and manifests are covered by the fingerprint)."""


@dataclass(frozen=True)
class WeightsRecord:
    """The recorded facts of one backbone.

    Attributes:
        role: what the backbone is for.
        model: the name or path the spec gave.
        kind: the source kind (:data:`vfmkit.weights.rule.SOURCE_KINDS`).
        source: the hub id, absolute path, ``random init`` or ``test variant, seed 0``.
        fingerprint: :func:`~vfmkit.weights.fingerprint.weights_fingerprint` of the module as built (sha256 hex).
        files: ``(absolute path, sha256 hex)`` of every local file read, empty when none was.
    """

    role: str
    model: str
    kind: str
    source: str
    fingerprint: str
    files: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (without the role, which keys it)."""
        return {
            "model": self.model,
            "kind": self.kind,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "files": [{"path": path, "sha256": digest} for path, digest in self.files],
        }

    @classmethod
    def from_dict(cls, role: str, data: dict[str, Any]) -> WeightsRecord:
        files = tuple((str(f["path"]), str(f["sha256"])) for f in data.get("files", []))
        return cls(role, str(data["model"]), str(data["kind"]), str(data["source"]), str(data["fingerprint"]), files)

    def card_line(self) -> str:
        """One markdown list line for the model card."""
        line = f"- {self.role}: `{self.model}`, {self.kind}: {self.source}; weights sha256 `{self.fingerprint}`"
        for path, digest in self.files:
            line += f"; file `{path}` sha256 `{digest}`"
        return line


def record_weights(decision: WeightsDecision, module: nn.Module) -> WeightsRecord:
    """The record of ``module``, built as ``decision`` says (fingerprint it before any training step)."""
    request = decision.request
    files = tuple((str(path), file_sha256(path)) for path in files_read(decision.path))
    return WeightsRecord(
        request.role, str(request.model), decision.kind, decision.source, weights_fingerprint(module), files
    )


def files_read(path: Path | None) -> list[Path]:
    """The files a weights source reads: the file itself, or a folder's top-level weights files (sorted)."""
    if path is None:
        return []
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_FILE_SUFFIXES))


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    with Path(path).open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def records_as_json(records: Iterable[WeightsRecord], init_from: Path | None) -> dict[str, Any]:
    """The ``weights.json`` object: ``{"roles": {role: record}, "init_from": path | null}`` (``init_from``: the
    whole model then started from that checkpoint's weights instead)."""
    return {"roles": {r.role: r.as_dict() for r in records}, "init_from": str(init_from) if init_from else None}


def records_from_json(data: dict[str, Any]) -> tuple[list[WeightsRecord], str | None]:
    """The records and ``init_from`` of a ``weights.json`` object."""
    roles = data.get("roles") or {}
    return [WeightsRecord.from_dict(role, value) for role, value in roles.items()], data.get("init_from")
