"""vfmkit: vision foundation models made useful.

The public names below are imported on first use, so ``import vfmkit`` (and the ``vfm`` console script, which must
answer Ctrl-C during its imports with "interrupted") does not import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vfmkit._version import __version__

if TYPE_CHECKING:  # for type checkers and the API docs (griffe reads these); at run time see __getattr__
    from vfmkit.data.images import list_image_files, load_image_rgb
    from vfmkit.data.preprocess import preprocess_image_groups, preprocess_images
    from vfmkit.models.backbones.base import AdaptorOutput, Backbone, BackboneOutput, Preprocessing
    from vfmkit.models.factory import load_backbone
    from vfmkit.models.registry import ModelEntry, list_backbones, resolve_entry
    from vfmkit.task import Task

_EXPORTS = {
    "Task": "vfmkit.task",
    "AdaptorOutput": "vfmkit.models.backbones.base",
    "Backbone": "vfmkit.models.backbones.base",
    "BackboneOutput": "vfmkit.models.backbones.base",
    "Preprocessing": "vfmkit.models.backbones.base",
    "ModelEntry": "vfmkit.models.registry",
    "list_backbones": "vfmkit.models.registry",
    "resolve_entry": "vfmkit.models.registry",
    "list_image_files": "vfmkit.data.images",
    "load_image_rgb": "vfmkit.data.images",
    "load_backbone": "vfmkit.models.factory",
    "preprocess_image_groups": "vfmkit.data.preprocess",
    "preprocess_images": "vfmkit.data.preprocess",
}
"""Public name -> the module that defines it."""

__all__ = [
    "__version__",
    "Task",
    "AdaptorOutput",
    "Backbone",
    "BackboneOutput",
    "Preprocessing",
    "ModelEntry",
    "list_backbones",
    "resolve_entry",
    "list_image_files",
    "load_image_rgb",
    "load_backbone",
    "preprocess_image_groups",
    "preprocess_images",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vfmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
