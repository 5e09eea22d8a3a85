"""vfmkit: vision foundation models made useful."""

from vfmkit._version import __version__
from vfmkit.models.backbones.base import AdaptorOutput, Backbone, BackboneOutput, Preprocessing
from vfmkit.models.factory import load_backbone
from vfmkit.models.registry import ModelEntry, list_backbones, resolve_entry

__all__ = [
    "AdaptorOutput",
    "Backbone",
    "BackboneOutput",
    "ModelEntry",
    "Preprocessing",
    "__version__",
    "list_backbones",
    "load_backbone",
    "resolve_entry",
]
