"""A timm CNN (ResNet, ConvNeXt, ...) as a trainable multi-scale feature extractor (``features_only``).

This is the *main* backbone of TAO's RT-DETR (``resnet_50``, ``convnext_*``): it is trained with the detector, unlike
the foundation models of the registry. Weights: random init, a local file (safetensors or a ``torch.save`` state
dict, read by :mod:`vfmkit.weights.safe_load` and handed to timm's pretrained loader, which drops the classifier), or
timm's published ImageNet weights from the Hugging Face cache (``HF_HUB_OFFLINE`` honoured; see
:mod:`vfmkit.weights.sources`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn

from vfmkit.errors import ModelNotFoundError, WeightsError
from vfmkit.models.backbones.base import Preprocessing
from vfmkit.models.backbones.timm_family import create_with_weights, fetch_hub_weights

TIMM_PREFIX = "timm:"
"""Backbone names starting with this select a timm CNN main backbone (``timm:resnet50``)."""


def is_timm_cnn_name(name: str) -> bool:
    """True for ``timm:<architecture>`` names."""
    return str(name).startswith(TIMM_PREFIX)


class TimmCNN(nn.Module):
    """Multi-scale maps of a timm CNN at the chosen strides.

    Args:
        model_name: timm architecture (``resnet50``, ``convnext_tiny`` ...), with or without the ``timm:`` prefix.
        strides: output strides wanted (finest first), each one of the network's stage reductions.
        checkpoint: a local weights file (takes precedence over ``pretrained``; the weights rule refuses a file with
            ``pretrained`` false where a spec or :func:`~vfmkit.models.heads.detr.build.build_feature_source` builds
            one).
        pretrained: load timm's published weights from the Hugging Face cache (False: random init).
        freeze_norm: turn the BatchNorm layers into frozen ones (fixed statistics and affine, as RT-DETR's ResNet
            backbones); None: frozen when weights were loaded, trainable for a random init.

    Attributes:
        strides: the output strides; channels: their channel counts.
        preprocessing: mean/std (applied inside) and the resolution step (the network's coarsest reduction, so every
            stage has an exact size).

    Raises:
        ModelNotFoundError: unknown architecture, or a stride the network does not produce.
        WeightsError: weights that are missing, unreadable or do not fit.
    """

    def __init__(
        self,
        model_name: str,
        strides: Sequence[int] = (8, 16, 32),
        checkpoint: str | Path | None = None,
        pretrained: bool = False,
        freeze_norm: bool | None = None,
    ):
        super().__init__()
        name = model_name[len(TIMM_PREFIX) :] if is_timm_cnn_name(model_name) else model_name
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise ModelNotFoundError(f"timm has no architecture {name!r}{hint}")
        config = timm.models.get_pretrained_cfg(name)
        weights = _weights(name, config, checkpoint, pretrained)
        self.model = _create(name, weights)
        if weights is not None if freeze_norm is None else freeze_norm:
            self.model = freeze_batch_norm_2d(self.model)
        reductions = [int(r) for r in self.model.feature_info.reduction()]
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise ModelNotFoundError(f"timm {name} has stages at strides {reductions}, not {missing}")
        self.indices = [reductions.index(s) for s in strides]
        self.strides = [int(s) for s in strides]
        self.channels = [int(self.model.feature_info.channels()[i]) for i in self.indices]
        mean = getattr(config, "mean", None) or (0.485, 0.456, 0.406)
        std = getattr(config, "std", None) or (0.229, 0.224, 0.225)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        step = max(reductions)
        side = int((getattr(config, "input_size", None) or (3, 224, 224))[-1])
        self.preprocessing = Preprocessing(
            tuple(mean), tuple(std), step, (side, side), max_resolution=4096, resolution_step=step
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) float RGB in [0, 1] -> per stride s a map (B, C_s, ~H/s, ~W/s), finest first."""
        maps = self.model((images - self.mean) / self.std)
        return [maps[i] for i in self.indices]


def _weights(name: str, config, checkpoint: str | Path | None, pretrained: bool) -> Path | None:
    """The weights file to load: ``checkpoint``, timm's published file from the Hub cache, or None (random)."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"checkpoint file {path} for timm {name} does not exist")
        return path
    if not pretrained:
        return None
    hub_id = getattr(config, "hf_hub_id", None)
    if not hub_id:
        raise WeightsError(f"timm {name} has no published weights on the Hugging Face Hub; pass a local checkpoint")
    return fetch_hub_weights(f"hf-hub:{hub_id}", f"timm:{name}")


def _create(name: str, weights: Path | None) -> nn.Module:
    """``timm.create_model(name, features_only=True)`` with the tensors of ``weights`` (read by
    :mod:`vfmkit.weights.safe_load`) through timm's pretrained loader.

    Raises:
        WeightsError: the file is empty, damaged, refused or does not fit; one line naming it.
    """
    if weights is None:
        return timm.create_model(name, pretrained=False, features_only=True)
    return create_with_weights(name, weights, f"timm {name}", features_only=True)
