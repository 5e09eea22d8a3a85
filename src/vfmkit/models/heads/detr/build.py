"""Build a DETR detector from plain arguments: backbone name, neck, preset and overrides."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from vfmkit.models.backbones.base import Backbone
from vfmkit.models.backbones.timm_cnn import TimmCNN, is_timm_cnn_name
from vfmkit.models.factory import load_backbone
from vfmkit.models.heads.detr.config import DETR_PRESETS, DetrConfig, DetrLossConfig, detr_preset
from vfmkit.models.heads.detr.detector import DETRDetector
from vfmkit.models.heads.detr.sources import FrozenFoundationBranch, NeckLevels
from vfmkit.models.losses.detr import DetrCriterion
from vfmkit.models.necks import build_neck
from vfmkit.weights.rule import WeightsRequest, decide_source


def build_feature_source(
    backbone: str | Backbone,
    strides: tuple[int, ...],
    neck: str = "simple_pyramid",
    neck_channels: int = 256,
    pretrained: bool = True,
    checkpoint: str | Path | None = None,
    freeze_backbone: bool | None = None,
    neck_options: dict[str, Any] | None = None,
    vitdet_window_size: int | None = None,
    freeze_norm: bool | None = None,
    patch_size: int | None = None,
) -> nn.Module:
    """The main feature source.

    Args:
        backbone: a registry id / alias / ``hf-hub:`` source / local path / :class:`Backbone` (through the neck), or
            ``timm:<architecture>`` for a trainable timm CNN (no neck).
        strides: the strides the detector reads.
        neck: ``simple_pyramid``, ``vit_adapter`` or ``projector`` (foundation backbones).
        neck_channels: the neck's output channels.
        pretrained: load published weights (foundation model: its registry source; timm CNN: timm's Hub weights).
        checkpoint: a local weights file for the backbone.
        freeze_backbone: None -> True for foundation backbones (the neck and head train), False for timm CNNs.
        neck_options: further keyword arguments of the neck (``summary_fusion``, ``norm``, ``indices`` ...).
        vitdet_window_size: windowed attention with this window (in patches) in all but the global blocks (RADIO
            v2/v2.5/v4, timm ViTs, open_clip towers) through the simple pyramid or the projector; input sides must be
            multiples of patch x window.
        patch_size: timm ViT / open_clip backbones: the patch size to resample the patch embedding to at load.
        freeze_norm: timm CNN: frozen BatchNorm layers (see :class:`TimmCNN`; None: frozen when weights load).

    Where the weights come from follows :func:`vfmkit.weights.rule.decide_source` (a timm CNN's ``checkpoint``
    needs ``pretrained``; foundation backbones through :func:`load_backbone`).

    Raises:
        ValueError: ``vitdet_window_size`` with a timm CNN or with the ViT-Adapter.
        ConfigurationError: a checkpoint that would be ignored (``pretrained`` false).
    """
    is_cnn = isinstance(backbone, str) and is_timm_cnn_name(backbone)
    if vitdet_window_size and (neck == "vit_adapter" or is_cnn):
        raise ValueError("windowed attention needs a ViT backbone through the simple pyramid or the projector")
    if is_cnn:
        decide_source(WeightsRequest("backbone", backbone, pretrained, checkpoint))
        cnn = TimmCNN(backbone, strides, checkpoint=checkpoint, pretrained=pretrained, freeze_norm=freeze_norm)
        if freeze_backbone:
            for param in cnn.parameters():
                param.requires_grad_(False)
        return cnn
    if not isinstance(backbone, Backbone):
        options = {"vitdet_window_size": vitdet_window_size, "patch_size": patch_size}
        options = {key: value for key, value in options.items() if value}
        backbone = load_backbone(backbone, pretrained=pretrained, checkpoint=checkpoint, **options)
    frozen = True if freeze_backbone is None else bool(freeze_backbone)
    options = {"out_channels": neck_channels, "freeze_backbone": frozen, **(neck_options or {})}
    if neck in ("simple_pyramid", "projector"):  # build only the levels read (the stride-4 level is the dearest)
        options.setdefault("strides", tuple(strides))
    return NeckLevels(build_neck(neck, backbone, **options), strides)


def build_detector(
    num_classes: int,
    head: str = "rtdetr",
    backbone: str | Backbone = "c-radio-v3-b",
    neck: str | None = None,
    neck_channels: int | None = None,
    pretrained: bool = True,
    backbone_checkpoint: str | Path | None = None,
    freeze_backbone: bool | None = None,
    neck_options: dict[str, Any] | None = None,
    frozen_fm: str | Backbone | None = None,
    frozen_fm_input_scale: float = 0.5,
    frozen_fm_pretrained: bool = True,
    frozen_fm_checkpoint: str | Path | None = None,
    vitdet_window_size: int | None = None,
    freeze_norm: bool | None = None,
    patch_size: int | None = None,
    **overrides: Any,
) -> tuple[DETRDetector, DetrCriterion]:
    """A detector and its matching set criterion.

    Args:
        num_classes: C (contiguous labels 0..C-1).
        head: preset ``rtdetr``, ``dino``, ``lw-n``, ``lw-s`` or ``lw-m``.
        backbone, neck, pretrained, backbone_checkpoint, freeze_backbone, neck_options: the main feature source
            (see :func:`build_feature_source`); ``neck_channels`` defaults to ``hidden_dim``; ``neck`` None takes the
            preset's (``projector`` for the light presets, else ``simple_pyramid``).
        frozen_fm: a foundation backbone (name or module) for the frozen side branch; None: no branch.
        frozen_fm_input_scale: the branch's input resize factor (TAO 0.5).
        frozen_fm_pretrained, frozen_fm_checkpoint: how to load the branch's backbone.
        vitdet_window_size, patch_size: the main backbone's windows and patch size (see :func:`build_feature_source`).
        freeze_norm: frozen BatchNorm layers in a timm CNN main backbone (see :func:`build_feature_source`).
        **overrides: :class:`DetrConfig` / :class:`DetrLossConfig` fields (TAO names); None keeps the preset value.

    Returns:
        ``(detector, criterion)``.
    """
    config, loss = detr_preset(head, num_classes, **overrides)
    source = build_feature_source(
        backbone,
        config.feat_strides,
        neck=neck or DETR_PRESETS[head].neck,
        neck_channels=neck_channels or config.hidden_dim,
        pretrained=pretrained,
        checkpoint=backbone_checkpoint,
        freeze_backbone=freeze_backbone,
        neck_options=neck_options,
        vitdet_window_size=vitdet_window_size,
        freeze_norm=freeze_norm,
        patch_size=patch_size,
    )
    branch = None
    if frozen_fm is not None:
        fm = frozen_fm
        if not isinstance(fm, Backbone):
            fm = load_backbone(fm, pretrained=frozen_fm_pretrained, checkpoint=frozen_fm_checkpoint)
        branch = FrozenFoundationBranch(fm, input_scale=frozen_fm_input_scale)
    return DETRDetector(source, config, branch), build_criterion(config, loss)


def build_criterion(config: DetrConfig, loss: DetrLossConfig) -> DetrCriterion:
    """The set criterion for ``config`` with the ``loss`` settings."""
    return DetrCriterion(config.num_classes, **asdict(loss))
