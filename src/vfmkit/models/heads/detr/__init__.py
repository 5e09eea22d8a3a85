"""The DETR detector family (RT-DETR and DINO presets) on vfmkit backbones.

``build_detector(num_classes, head="rtdetr" | "dino", backbone=..., neck=..., frozen_fm=..., **overrides)`` returns
``(DETRDetector, DetrCriterion)``; see :mod:`~vfmkit.models.heads.detr.detector` for the output format.
"""

from vfmkit.models.heads.detr.build import build_criterion, build_detector, build_feature_source
from vfmkit.models.heads.detr.config import DETR_PRESETS, DetrConfig, DetrLossConfig, detr_preset
from vfmkit.models.heads.detr.denoising import DenoisingQueries, build_denoising_queries, denoising_attn_mask
from vfmkit.models.heads.detr.detector import DETRDetector
from vfmkit.models.heads.detr.sources import FrozenFoundationBranch, NeckLevels

__all__ = [
    "DETR_PRESETS",
    "DETRDetector",
    "DenoisingQueries",
    "DetrConfig",
    "DetrLossConfig",
    "FrozenFoundationBranch",
    "NeckLevels",
    "build_criterion",
    "build_denoising_queries",
    "build_detector",
    "build_feature_source",
    "denoising_attn_mask",
    "detr_preset",
]
