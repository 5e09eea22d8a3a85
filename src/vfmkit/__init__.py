"""vfmkit: vision foundation models made useful.

The public names below are imported on first use, so ``import vfmkit`` (and the ``vfm`` console script, which must
answer Ctrl-C during its imports with "interrupted") does not import torch until something needs it.
"""

from __future__ import annotations

import importlib

from vfmkit._version import __version__

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

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vfmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
