"""Dense-prediction necks: a backbone in, a feature pyramid (strides 4/8/16/32; the light DETRs' ``projector``: its
P3/P4/P5 at 8/16/32) and the summary out.

``build_neck("vit_adapter" | "simple_pyramid" | "projector", backbone, **options)`` returns a module whose
``forward(images)`` takes float RGB (B, 3, H, W) in [0, 1] and returns a :class:`NeckOutput`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vfmkit.errors import ConfigurationError
from vfmkit.models.backbones.base import Backbone
from vfmkit.models.necks.common import NECK_STRIDES, NeckOutput
from vfmkit.models.necks.msdeform_attn import MSDeformAttn, ms_deform_attn
from vfmkit.models.necks.projector import MultiLayerProjector
from vfmkit.models.necks.simple_pyramid import SimpleFeaturePyramid
from vfmkit.models.necks.vit_adapter import ViTAdapter

NECKS: dict[str, type[nn.Module]] = {
    "vit_adapter": ViTAdapter,
    "simple_pyramid": SimpleFeaturePyramid,
    "projector": MultiLayerProjector,
}

__all__ = [
    "NECKS",
    "NECK_STRIDES",
    "MSDeformAttn",
    "MultiLayerProjector",
    "NeckOutput",
    "SimpleFeaturePyramid",
    "ViTAdapter",
    "build_neck",
    "ms_deform_attn",
]


def build_neck(kind: str, backbone: Backbone, **options: Any) -> nn.Module:
    """Build a neck around ``backbone``.

    Args:
        kind: ``vit_adapter`` (:class:`ViTAdapter`), ``simple_pyramid`` (:class:`SimpleFeaturePyramid`) or
            ``projector`` (:class:`MultiLayerProjector`, the light DETRs' multi-layer projector).
        backbone: the vfmkit backbone the neck owns (as its ``backbone`` attribute).
        **options: the neck's keyword arguments (``out_channels``, ``summary_fusion``, ``freeze_backbone``, ``norm``,
            and the kind's own ones).

    Returns:
        The neck; ``forward(images (B, 3, H, W) in [0, 1]) -> NeckOutput`` with four maps at strides 4/8/16/32 (the
        projector: its ``strides``).

    Raises:
        ConfigurationError: unknown kind, or options / a backbone the neck does not support; the message names the
            ``model.neck`` setting to change (every task spells its neck choice that way).
    """
    if kind not in NECKS:
        raise ConfigurationError(f"model.neck: unknown neck {kind!r}; choose one of {', '.join(NECKS)}")
    try:
        return NECKS[kind](backbone, **options)
    except (TypeError, ValueError) as err:
        others = [name for name in ("vit_adapter", "simple_pyramid") if name != kind]  # every dense task has these
        model = getattr(backbone, "model_id", type(backbone).__name__)
        raise ConfigurationError(
            f"model.neck {kind!r} does not support the backbone {model} ({' '.join(str(err).split())}); set "
            f"model.neck to {' or '.join(others)}, or choose another model.backbone"
        ) from None
