"""Imports every family module so their builders and registry entries are registered (in this order)."""

# isort: off
from vfmkit.models.backbones.radio import zoo as radio_zoo  # noqa: F401
from vfmkit.models.backbones import timm_family, open_clip_family, dinov2_zoo, clip_zoo  # noqa: F401
# isort: on
