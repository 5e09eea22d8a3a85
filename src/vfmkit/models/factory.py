"""Build and load backbones: the one entry point, :func:`load_backbone`.

``name_or_path`` may be
- a registry id or alias (``c-radio-v3-b``, ``c_radio_v3_vit_base_patch16_reg4_dinov2``): built by its family
  builder and loaded from its published source (``pretrained=False`` gives random init);
- ``hf-hub:<org>/<repo>[@revision][/file]``: a RADIO checkpoint on the Hugging Face Hub (through the local cache);
- a local folder (Hugging Face layout: ``config.json`` + ``model.safetensors``, or one ``*.pth.tar``) or file;
- an adapted-backbone folder (``vfmkit_backbone.json`` + weights: a distilled student with its teacher heads, see
  ``vfmkit.models.backbones.adapted``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from vfmkit.errors import ConfigurationError, ModelNotFoundError
from vfmkit.models.backbones.base import Backbone
from vfmkit.models.registry import ModelEntry, find_entry, resolve_entry
from vfmkit.weights.rule import (
    ADAPTED_BACKBONE,
    HUB_SOURCE,
    LOCAL_BACKBONE,
    RANDOM_INIT,
    TEST_VARIANT,
    WeightsRequest,
    decide_source,
)

FamilyBuilder = Callable[..., Backbone]
"""``builder(entry, pretrained: bool, adaptors: Sequence[str]) -> Backbone``."""

_FAMILY_BUILDERS: dict[str, FamilyBuilder] = {}

PATCH_SIZE_FAMILIES = ("timm", "open_clip")
"""Registry families whose patch size can be changed at load."""


def register_family(name: str, builder: FamilyBuilder) -> None:
    """Register the builder of a model family (called by each family module at import)."""
    _FAMILY_BUILDERS[name] = builder


def _family_builder(family: str) -> FamilyBuilder:
    from vfmkit.models.backbones import zoo  # noqa: F401  (registers families and entries)

    if family not in _FAMILY_BUILDERS:
        raise ModelNotFoundError(f"no builder for model family {family!r}")
    return _FAMILY_BUILDERS[family]


def build_from_entry(
    entry: ModelEntry, pretrained: bool = True, adaptors: Sequence[str] = (), **options: Any
) -> Backbone:
    """Build a registry entry, loading its weights when ``pretrained`` (test variants are always random init).

    ``options`` are ``checkpoint`` (a local weights file used instead of the published source; needed for weights
    published outside the Hugging Face Hub) and family-specific ones (RADIO: ``vitdet_window_size``); None values
    are dropped. An entry without a published source raises when ``pretrained`` and no ``checkpoint`` is given.
    """
    options = {k: v for k, v in options.items() if v is not None}
    builder = _family_builder(entry.family)
    if entry.test_only:  # random test variants are the same on every build: reproducible tests and demos
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return builder(entry, pretrained=False, adaptors=adaptors, **options)
    return builder(entry, pretrained=pretrained, adaptors=adaptors, **options)


def require_model_name(name: str) -> None:
    """Refuse an empty (or blank) model name, which as a path would mean the current folder.

    Raises:
        ModelNotFoundError: ``name`` is empty or only whitespace.
    """
    if not name.strip():
        raise ModelNotFoundError(
            "the model name is empty: expected a registry id or alias (`vfm models` lists them), "
            "hf-hub:<org>/<repo>, or a checkpoint file or folder"
        )


def load_backbone(
    name_or_path: str | Path,
    adaptors: Sequence[str] | None = None,
    pretrained: bool = True,
    vitdet_window_size: int | None = None,
    checkpoint: str | Path | None = None,
    patch_size: int | None = None,
) -> Backbone:
    """Build a backbone from a registry id/alias, an ``hf-hub:`` source, or a local checkpoint.

    Where the weights come from is decided by :func:`vfmkit.weights.rule.decide_source` (one rule for every
    backbone vfmkit builds): a checkpoint file is always loaded, and a request that contradicts itself is refused,
    never resolved silently.

    Args:
        name_or_path: what to load (see the module docstring).
        adaptors: teacher adaptor heads to attach (RADIO), e.g. ``["siglip"]``.
        pretrained: for registry ids, load the published weights (False: random init). A path or hub source always
            loads its own weights: False is refused for it.
        vitdet_window_size: windowed attention with this window (in patches) in most blocks: RADIO v2/v2.5/v4 (its
            reference ViTDet mode), timm ViTs and open_clip towers (``vfmkit.models.backbones.windowed``).
        checkpoint: for registry ids, a local weights file to load instead of the published source (needs
            ``pretrained``; refused for test variants, paths and hub sources).
        patch_size: timm ViT / open_clip registry ids only: resample the patch embedding (and the position
            embedding) to this patch size after loading (``vfmkit.models.backbones.patch_size``).

    Returns:
        The backbone in eval mode, float32, on the CPU. ``model.model_id`` is ``name_or_path``;
        ``model.weights_source`` names where its weights came from (the hub id, the resolved file path or the
        registry entry's published source), or is None for random initialisation and test variants.

    Raises:
        ModelNotFoundError: the name or checkpoint is empty or resolves to nothing; ConfigurationError: a checkpoint
        with ``pretrained=False``, a checkpoint for a test variant, path or hub source, or ``pretrained=False`` for a
        path or hub source; WeightsError: the checkpoint is unusable.
    """
    adaptors = tuple(adaptors or ())
    name = str(name_or_path)
    require_model_name(name)
    _check_patch_size_option(name, patch_size)
    decision = decide_source(WeightsRequest("backbone", name, pretrained, checkpoint))
    if decision.kind == ADAPTED_BACKBONE:
        from vfmkit.models.backbones.adapted import load_adapted_backbone

        model = load_adapted_backbone(name, adaptors=adaptors, vitdet_window_size=vitdet_window_size)
    elif decision.kind in (LOCAL_BACKBONE, HUB_SOURCE):
        from vfmkit.models.backbones.radio.load import load_radio_checkpoint

        model = load_radio_checkpoint(name, adaptors=adaptors, defaults={"vitdet_window_size": vitdet_window_size})
    else:
        entry = resolve_entry(name)
        options = {"vitdet_window_size": vitdet_window_size, "checkpoint": decision.path, "patch_size": patch_size}
        model = build_from_entry(entry, pretrained=pretrained, adaptors=adaptors, **options)
    model.model_id = name
    model.weights_source = decision.source if decision.kind not in (TEST_VARIANT, RANDOM_INIT) else None
    return model.eval()


def _check_patch_size_option(name: str, patch_size: int | None) -> None:
    """A patch-size change applies to timm / open_clip registry models only.

    Raises:
        ConfigurationError: ``patch_size`` given for anything else.
    """
    if patch_size is None:
        return
    entry = find_entry(name)
    if entry is None or entry.family not in PATCH_SIZE_FAMILIES:
        raise ConfigurationError(
            f"patch_size applies to timm ViT and open_clip registry models, not {name!r} (its patch size is fixed)"
        )
