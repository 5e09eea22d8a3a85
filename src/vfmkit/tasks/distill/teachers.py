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
new entry; a corrupt entry reads as a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vfmkit.data.preprocess import target_size
from vfmkit.errors import VfmError
from vfmkit.models.backbones.base import Backbone, freeze, nearest_supported_resolution
from vfmkit.utils.atomic import atomic_output
from vfmkit.weights.fingerprint import weights_fingerprint

logger = logging.getLogger(__name__)

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


def file_key(path: str | Path) -> str:
    """Hex key of an image file's identity: resolved path, size and modification time (ns)."""
    path = Path(path)
    stat = path.stat()
    return hashlib.sha256(json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns]).encode()).hexdigest()


class TeacherCache:
    """Per-image teacher outputs on disk (see the module docstring); picklable, so DataLoader workers read it.

    Args:
        root: the cache folder (created on the first write).
        teacher_keys: teacher name -> :meth:`FrozenTeacher.cache_key`.
        dtype: ``float32``, ``bfloat16`` or ``float16`` storage.
    """

    def __init__(self, root: str | Path, teacher_keys: dict[str, str], dtype: str = "bfloat16"):
        if dtype not in CACHE_DTYPES:
            raise VfmError(f"cache dtype must be one of {', '.join(CACHE_DTYPES)}, got {dtype!r}")
        self.root, self.teacher_keys, self.dtype = Path(root), dict(teacher_keys), dtype

    def entry_path(self, teacher: str, key: str) -> Path:
        """Where one image's outputs of one teacher live."""
        return self.root / f"{teacher}-{self.teacher_keys[teacher][:16]}" / f"{key[:32]}.safetensors"

    def load(self, teacher: str, key: str) -> dict[str, torch.Tensor] | None:
        """``{"summary": (C_s,), "features": (N, C_f), "grid": (2,) int64}`` float32 tensors, or None on a miss.

        A corrupt entry is logged and reported as a miss (it is rewritten when the teacher runs again).
        """
        path = self.entry_path(teacher, key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            logger.warning("teacher cache: unreadable entry %s (%s); recomputing it", path, err)
            return None
        return {k: v if k == "grid" else v.float() for k, v in tensors.items()}

    def save(self, teacher: str, key: str, summary: torch.Tensor | None, features: torch.Tensor | None, grid) -> None:
        """Store one image's outputs atomically (:func:`vfmkit.utils.atomic.atomic_output`)."""
        path = self.entry_path(teacher, key)
        dtype = CACHE_DTYPES[self.dtype]
        tensors = {"grid": torch.tensor(list(grid), dtype=torch.int64)}
        if summary is not None:
            tensors["summary"] = summary.detach().to("cpu", dtype).contiguous()
        if features is not None:
            tensors["features"] = features.detach().to("cpu", dtype).contiguous()
        with atomic_output(path) as tmp:
            save_file(tensors, str(tmp))
