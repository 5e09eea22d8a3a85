"""Frozen teachers and the on-disk teacher-output cache.

A :class:`FrozenTeacher` wraps any backbone (registry id, checkpoint, adapted folder or an in-memory module), keeps it
frozen and in eval mode for good, runs it at its own resolution with its own normalisation (every vfmkit backbone
normalises inside), and returns the targets its ``mode`` needs: the summary and/or the patch features of the
backbone or of one of its adaptor heads.

:class:`TeacherCache` stores those targets per image, in
``<root>/<teacher>-<teacher key[:16]>/<file key[:32]>.safetensors``: ``summary`` (C_s,) and/or ``features``
(N, C_f) in the cache dtype, and ``grid`` (2,) int64. The teacher key
hashes the teacher's weights fingerprint (:func:`vfmkit.weights.fingerprint.weights_fingerprint`, the one the
classification feature cache uses), its preprocessing, input size, adaptor, mode and the cache dtype; the file key
hashes the image's resolved path, size and modification time, as the classification cache does. Any change gives a
new entry. Entries are :mod:`vfmkit.utils.tensor_cache` entries (layout, content hash and key facts in their
metadata): one that does not verify (undecodable, truncated, other names / dtypes / shapes than the teacher's
targets, a well-formed file with other values, another teacher or file) reads as a miss, is counted as damaged and
is rewritten when the teacher runs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from vfmkit.data.preprocess import target_size
from vfmkit.errors import VfmError
from vfmkit.models.backbones.base import Backbone, freeze, nearest_supported_resolution
from vfmkit.utils.tensor_cache import Layout, Lookup, read_entry, write_entry
from vfmkit.weights.fingerprint import weights_fingerprint

CACHE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TeacherTargets:
    """What one teacher produced for a batch (float32; a field is None when the mode does not use it).

    Attributes:
        summary: (B, C_s) teacher summaries.
        features: (B, h*w, C_f) teacher patch features, raster order.
        grid: (h, w) of ``features``.
    """

    summary: torch.Tensor | None
    features: torch.Tensor | None
    grid: tuple[int, int]


def teacher_output_dims(backbone: Backbone, adaptor: str | None) -> tuple[int, int]:
    """(C_s, C_f) of a backbone's outputs, or of one of its adaptor heads.

    Raises:
        VfmError: an adaptor the backbone was not loaded with.
    """
    if adaptor is None:
        return backbone.summary_dim, backbone.embed_dim
    heads = getattr(backbone, "adaptors", {})
    if adaptor not in heads:
        have = ", ".join(getattr(backbone, "adaptor_names", ())) or "none"
        raise VfmError(f"teacher has no adaptor {adaptor!r} (loaded adaptors: {have})")
    cfg = heads[adaptor].cfg
    summary = cfg.summary_mlp[3] if cfg.summary_mlp else backbone.embed_dim
    features = cfg.feature_mlp[3] if cfg.feature_mlp else backbone.embed_dim
    return summary, features


class FrozenTeacher(nn.Module):
    """A frozen backbone producing distillation targets.

    Args:
        backbone: any vfmkit backbone (loaded with ``adaptor`` when one is used).
        name: the teacher's head name on the student.
        mode: ``summary``, ``spatial`` or ``combo`` (which targets to produce).
        adaptor: read the targets from this adaptor head instead of the backbone outputs.
        resolution: (H, W) input size; None: the backbone's preferred resolution. Sizes that are not multiples of
            the backbone's step are rounded to the nearest supported size.
    """

    def __init__(
        self,
        backbone: Backbone,
        name: str,
        mode: str = "combo",
        adaptor: str | None = None,
        resolution: tuple[int, int] | None = None,
    ):
        super().__init__()
        freeze(backbone)
        self.backbone = backbone.eval()
        self.name, self.mode, self.adaptor = name, mode, adaptor
        self.uses_summary = mode in ("summary", "combo")
        self.uses_features = mode in ("spatial", "combo")
        prep = backbone.preprocessing
        size = prep.preferred_resolution if resolution is None else tuple(resolution)
        size = nearest_supported_resolution(*size, prep.resolution_step)
        self.resolution = target_size(size[::-1], prep, size, "preferred")
        self.summary_dim, self.feature_dim = teacher_output_dims(backbone, adaptor)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """The wrapper follows ``mode``; the teacher stays in eval mode (also one without parameters, which
        :class:`~vfmkit.models.backbones.base.BackboneOwner` would not recognise as frozen)."""
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> TeacherTargets:
        """(B, 3, H, W) float RGB in [0, 1] at :attr:`resolution` -> the targets (float32)."""
        out = self.backbone(images)
        head = out.adaptors[self.adaptor] if self.adaptor else out
        summary = head.summary.float() if self.uses_summary else None
        features = head.features.float() if self.uses_features else None
        return TeacherTargets(summary, features, tuple(head.grid))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the teacher's weights (computed once)."""
        return weights_fingerprint(self.backbone)

    def cache_key(self, dtype: str) -> str:
        """Hex key of everything that determines the cached outputs of one image (besides the image)."""
        payload = {
            "weights": self.fingerprint,
            "preprocessing": repr(self.backbone.preprocessing),
            "resolution": list(self.resolution),
            "adaptor": self.adaptor,
            "mode": self.mode,
            "dtype": dtype,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @torch.no_grad()
    def target_shapes(self) -> tuple[dict[str, tuple[int, ...]], tuple[int, int]]:
        """Per-image shapes of the targets the mode uses (``summary`` (C_s,), ``features`` (h*w, C_f)) and the
        grid (h, w), from one forward pass on a blank image at :attr:`resolution`."""
        tensors = [*self.backbone.parameters(), *self.backbone.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
        out = self(torch.zeros(1, 3, *self.resolution, device=device))
        shapes = {}
        if out.summary is not None:
            shapes["summary"] = tuple(out.summary.shape[1:])
        if out.features is not None:
            shapes["features"] = tuple(out.features.shape[1:])
        return shapes, tuple(int(v) for v in out.grid)


def file_key(path: str | Path) -> str:
    """Hex key of an image file's identity: resolved path, size and modification time (ns)."""
    path = Path(path)
    stat = path.stat()
    return hashlib.sha256(json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns]).encode()).hexdigest()


@dataclass(frozen=True)
class CachedTeacher:
    """What the cache knows of one teacher: its :meth:`FrozenTeacher.cache_key`, the exact layout of an entry
    (name -> (dtype, shape), ``grid`` included) and the grid (h, w) every entry must record."""

    key: str
    layout: Layout
    grid: tuple[int, int]


class TeacherCache:
    """Per-image teacher outputs on disk (see the module docstring); picklable, so DataLoader workers read it.

    Args:
        root: the cache folder (created on the first write).
        teachers: teacher name -> :class:`CachedTeacher` (:meth:`for_teachers` makes them).
        dtype: ``float32``, ``bfloat16`` or ``float16`` storage.
    """

    def __init__(self, root: str | Path, teachers: dict[str, CachedTeacher], dtype: str = "bfloat16"):
        if dtype not in CACHE_DTYPES:
            raise VfmError(f"cache dtype must be one of {', '.join(CACHE_DTYPES)}, got {dtype!r}")
        self.root, self.teachers, self.dtype = Path(root), dict(teachers), dtype

    @classmethod
    def for_teachers(cls, root: str | Path, teachers: Sequence[FrozenTeacher], dtype: str = "bfloat16") -> TeacherCache:
        """The cache of these teachers (each runs once on a blank image to learn the shapes of its targets)."""
        if dtype not in CACHE_DTYPES:
            raise VfmError(f"cache dtype must be one of {', '.join(CACHE_DTYPES)}, got {dtype!r}")
        known = {}
        for teacher in teachers:
            shapes, grid = teacher.target_shapes()
            layout = {"grid": (torch.int64, (2,))}
            layout.update({name: (CACHE_DTYPES[dtype], shape) for name, shape in shapes.items()})
            known[teacher.name] = CachedTeacher(teacher.cache_key(dtype), layout, grid)
        return cls(root, known, dtype)

    def entry_path(self, teacher: str, key: str) -> Path:
        """Where one image's outputs of one teacher live."""
        return self.root / f"{teacher}-{self.teachers[teacher].key[:16]}" / f"{key[:32]}.safetensors"

    def _facts(self, teacher: str, key: str) -> dict[str, str]:
        return {"teacher": teacher, "teacher_key": self.teachers[teacher].key, "file_key": key}

    def lookup(self, teacher: str, key: str) -> Lookup:
        """One image's entry, verified: on a hit ``{"summary": (C_s,), "features": (N, C_f)}`` float32 (the kinds
        the mode uses) and ``grid`` (2,) int64; a miss when absent, damaged (with the reason) when it does not
        verify."""
        expected = self.teachers[teacher]
        lookup = read_entry(self.entry_path(teacher, key), expected.layout, self._facts(teacher, key))
        if not lookup.hit:
            return lookup
        if tuple(lookup.tensors["grid"].tolist()) != expected.grid:
            return Lookup(None, f"grid {tuple(lookup.tensors['grid'].tolist())} instead of {expected.grid}")
        return Lookup({k: v if k == "grid" else v.float() for k, v in lookup.tensors.items()})

    def load(self, teacher: str, key: str) -> dict[str, torch.Tensor] | None:
        """The tensors of :meth:`lookup` on a hit, else None."""
        return self.lookup(teacher, key).tensors

    def save(self, teacher: str, key: str, summary: torch.Tensor | None, features: torch.Tensor | None, grid) -> None:
        """Store one image's outputs atomically (:func:`vfmkit.utils.tensor_cache.write_entry`).

        Raises:
            OSError: the entry cannot be written (the error names its path).
        """
        dtype = CACHE_DTYPES[self.dtype]
        tensors = {"grid": torch.tensor(list(grid), dtype=torch.int64)}
        if summary is not None:
            tensors["summary"] = summary.detach().to("cpu", dtype)
        if features is not None:
            tensors["features"] = features.detach().to("cpu", dtype)
        write_entry(self.entry_path(teacher, key), tensors, self._facts(teacher, key))
