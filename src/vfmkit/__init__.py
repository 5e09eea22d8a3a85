"""vfmkit: vision foundation models made useful."""

from vfmkit._version import __version__
from vfmkit.data.images import list_image_files, load_image_rgb
from vfmkit.data.preprocess import preprocess_image_groups, preprocess_images
from vfmkit.models.backbones.base import AdaptorOutput, Backbone, BackboneOutput, Preprocessing
from vfmkit.models.factory import load_backbone
from vfmkit.models.registry import ModelEntry, list_backbones, resolve_entry

__all__ = [
    "Task",
    "AdaptorOutput",
    "Backbone",
    "BackboneOutput",
    "ModelEntry",
    "Preprocessing",
    "__version__",
    "list_backbones",
    "list_image_files",
    "load_backbone",
    "load_image_rgb",
    "preprocess_image_groups",
    "preprocess_images",
    "resolve_entry",
]


def __getattr__(name: str):
    # vfmkit.Task imports the task registry and the engine only when used, so `import vfmkit` stays light
    if name == "Task":
        from vfmkit.task import Task

        return Task
    raise AttributeError(f"module 'vfmkit' has no attribute {name!r}")
