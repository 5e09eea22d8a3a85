"""The backbone registry: one canonical id per weight set, with aliases (e.g. TAO's names).

Entries are registered by the family zoo modules (``vfmkit.models.backbones.*_zoo``); :func:`resolve_entry` turns an
id or alias into its :class:`ModelEntry`, and ``vfmkit.models.factory`` builds and loads the model.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from vfmkit.errors import ModelNotFoundError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelEntry:
    """Everything vfmkit knows about one weight set.

    Attributes:
        id: canonical id, lower case with dashes (``c-radio-v3-b``).
        family: builder family: ``radio``, ``timm`` or ``open_clip``.
        arch: family-specific architecture config handed to the family builder.
        description: one line for humans.
        license: license of the weights.
        params_m: parameter count in millions (backbone only), None if unknown.
        patch_size: patch side in pixels.
        preferred_resolution: side length the weights are best at (summary tasks).
        max_resolution: largest supported side.
        mean, std: RGB normalisation applied to [0, 1] inputs.
        summary_dim: width of ``summary``; feature_dim: width of ``features``.
        source: where the weights are published (``hf-hub:<repo>[@rev][/file]``), None for test variants.
        alt_sources: other published files of the same weights (e.g. the torch.hub ``.pth.tar`` that carries
            adaptor heads the safetensors lack).
        adaptors: adaptor heads the published checkpoint carries.
        aliases: other names that resolve to this entry.
        tasks: tasks the backbone suits.
        test_only: a tiny random-init variant for tests and demos.
    """

    id: str
    family: str
    arch: dict[str, Any]
    description: str
    license: str
    params_m: float | None
    patch_size: int
    preferred_resolution: int
    max_resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    summary_dim: int
    feature_dim: int
    source: str | None = None
    alt_sources: tuple[str, ...] = ()
    adaptors: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ("embed", "classify", "segment", "change", "detect", "universal", "distill")
    test_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


_ENTRIES: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def _normalise(name: str) -> str:
    return name.strip().lower()


def register(entry: ModelEntry) -> ModelEntry:
    """Add an entry; ids and aliases must be unique (case-insensitive)."""
    for name in (entry.id, *entry.aliases):
        key = _normalise(name)
        if key in _ENTRIES or key in _ALIASES:
            raise ValueError(f"registry name {name!r} is already taken")
    _ENTRIES[_normalise(entry.id)] = entry
    for alias in entry.aliases:
        _ALIASES[_normalise(alias)] = _normalise(entry.id)
    return entry


def _ensure_zoo_loaded() -> None:
    # Importing the zoo modules registers their entries; done lazily to keep `import vfmkit` light.
    from vfmkit.models.backbones import zoo  # noqa: F401


def find_entry(name: str) -> ModelEntry | None:
    """The entry for an id or alias, or None."""
    _ensure_zoo_loaded()
    key = _normalise(name)
    key = _ALIASES.get(key, key)
    return _ENTRIES.get(key)


def resolve_entry(name: str) -> ModelEntry:
    """The entry for an id or alias.

    Raises:
        ModelNotFoundError: unknown name; the message suggests the closest ids.
    """
    entry = find_entry(name)
    if entry is None:
        names = list(_ENTRIES) + list(_ALIASES)
        close = difflib.get_close_matches(_normalise(name), names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `vfm models` lists them"
        raise ModelNotFoundError(f"unknown model {name!r} (not a registry id, alias or existing path){hint}")
    return entry


def list_backbones(include_test: bool = False, family: str | None = None) -> list[ModelEntry]:
    """All registered entries in registration order (test variants only when asked)."""
    _ensure_zoo_loaded()
    return [
        e for e in _ENTRIES.values() if (include_test or not e.test_only) and (family is None or e.family == family)
    ]
