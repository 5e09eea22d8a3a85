"""Turn image files or PIL images into the float batch a backbone takes.

A backbone takes float32 NCHW RGB in [0, 1] with H and W multiples of its ``preprocessing.resolution_step``; it
normalises (mean/std) itself. Two resolution policies:

- ``"preferred"`` (default): every image is resized, ignoring its aspect ratio, to the model's preferred
  resolution, or to N x N when ``resolution=N`` (or (H, W) when a pair is given). All images share one size.
- ``"aspect"``: the aspect ratio is kept: the short side is scaled to the target (``resolution`` or the short side
  of the preferred resolution) and then both sides are rounded to the nearest multiple of the resolution step.
  Images of different shapes then get different sizes and cannot share a batch tensor:
  :func:`preprocess_images` refuses such a mix (DataError) and :func:`preprocess_image_groups` returns one batch
  per output size instead.

Resizing is bilinear with antialiasing (a triangle filter over the source pixels when shrinking), on the float
image, like ``torchvision.transforms.v2.functional.resize(..., antialias=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vfmkit.data.images import load_image_rgb, to_rgb
from vfmkit.errors import DataError, VfmError
from vfmkit.models.backbones.base import Backbone, Preprocessing, nearest_supported_resolution

Policy = Literal["preferred", "aspect"]
ImageInput = str | Path | Image.Image
Resolution = int | tuple[int, int] | None
POLICIES = ("preferred", "aspect")


def get_preprocessing(model_or_preprocessing: Backbone | Preprocessing) -> Preprocessing:
    """The :class:`Preprocessing` of a backbone (or the argument itself)."""
    if isinstance(model_or_preprocessing, Preprocessing):
        return model_or_preprocessing
    preprocessing = getattr(model_or_preprocessing, "preprocessing", None)
    if not isinstance(preprocessing, Preprocessing):
        raise TypeError(f"expected a Backbone or a Preprocessing, got {type(model_or_preprocessing).__name__}")
    return preprocessing


def target_size(
    image_size: tuple[int, int],
    preprocessing: Preprocessing,
    resolution: Resolution = None,
    policy: Policy = "preferred",
) -> tuple[int, int]:
    """The (H, W) an image of ``image_size`` = (W, H) (PIL order) is resized to.

    Raises:
        VfmError: an unknown policy, a resolution that is not a multiple of the step, or a resolution other than
            the preferred one for a fixed-resolution model.
    """
    if policy not in POLICIES:
        raise VfmError(f"resolution policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    step = preprocessing.resolution_step
    if policy == "preferred":
        size = preprocessing.preferred_resolution if resolution is None else _pair(resolution)
        _check_step(size, step)
    else:
        short = min(preprocessing.preferred_resolution) if resolution is None else _short_side(resolution)
        width, height = image_size
        scale = short / min(width, height)
        size = nearest_supported_resolution(round(height * scale), round(width * scale), step)
    if preprocessing.fixed_resolution and tuple(size) != tuple(preprocessing.preferred_resolution):
        pref = preprocessing.preferred_resolution
        raise VfmError(
            f"this model only accepts {pref[0]}x{pref[1]} inputs (fixed position embeddings); got a request for "
            f"{size[0]}x{size[1]}: leave the resolution unset and use the 'preferred' policy"
        )
    return size


def _pair(resolution: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        return resolution, resolution
    height, width = resolution
    return int(height), int(width)


def _short_side(resolution: int | tuple[int, int]) -> int:
    if isinstance(resolution, int):
        return resolution
    raise VfmError(f"the 'aspect' policy takes one short-side length, got {resolution!r}")


def _check_step(size: tuple[int, int], step: int) -> None:
    height, width = size
    if height <= 0 or width <= 0 or height % step or width % step:
        near = nearest_supported_resolution(max(height, 1), max(width, 1), step)
        raise VfmError(
            f"resolution {height}x{width} is not a positive multiple of this model's resolution step {step}; "
            f"nearest supported: {near[0]}x{near[1]}"
        )


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> float32 (3, H, W) tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a float (3, H, W) image in [0, 1] to ``size`` = (H, W); output in [0, 1]."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return resized.clamp_(0.0, 1.0)


def preprocess_image(
    image: ImageInput, preprocessing: Preprocessing, resolution: Resolution = None, policy: Policy = "preferred"
) -> torch.Tensor:
    """One image (path or PIL image) -> float32 (3, H, W) RGB in [0, 1] at its target size.

    Raises:
        DataError: an unreadable image file.
    """
    pil = to_rgb(image) if isinstance(image, Image.Image) else load_image_rgb(image)
    size = target_size(pil.size, preprocessing, resolution, policy)
    return resize(pil_to_tensor(pil), size)


def preprocess_images(
    images: ImageInput | Sequence[ImageInput],
    model_or_preprocessing: Backbone | Preprocessing,
    resolution: Resolution = None,
    policy: Policy = "preferred",
) -> torch.Tensor:
    """Image files and/or PIL images -> the float batch a backbone takes.

    Args:
        images: a path, a PIL image, or a sequence mixing both (any mode: grayscale, RGBA, 16-bit, CMYK...; see
            :mod:`vfmkit.data.images`).
        model_or_preprocessing: the backbone (or its :class:`Preprocessing`) that sets the resolution rules.
        resolution: ``None`` for the model's preferred resolution; N for N x N (``"preferred"``) or a short side of
            N (``"aspect"``); (H, W) for an exact size (``"preferred"`` only). Must be multiples of the step.
        policy: ``"preferred"`` or ``"aspect"`` (see the module docstring).

    Returns:
        float32 (B, 3, H, W) RGB in [0, 1], images in the given order.

    Raises:
        DataError: an unreadable image, or images that map to different sizes under ``"aspect"`` (use
            :func:`preprocess_image_groups`).
        VfmError: an invalid resolution or policy.
    """
    items = _as_list(images)
    preprocessing = get_preprocessing(model_or_preprocessing)
    tensors = [preprocess_image(item, preprocessing, resolution, policy) for item in items]
    sizes = sorted({tuple(t.shape[-2:]) for t in tensors})
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise DataError(
            f"the 'aspect' policy gave these images different sizes ({listed}); batch them separately with "
            "vfmkit.data.preprocess.preprocess_image_groups, or use the 'preferred' policy"
        )
    return torch.stack(tensors)


def preprocess_image_groups(
    images: Sequence[ImageInput],
    model_or_preprocessing: Backbone | Preprocessing,
    resolution: Resolution = None,
    policy: Policy = "aspect",
) -> list[tuple[list[int], torch.Tensor]]:
    """Like :func:`preprocess_images`, grouping images by output size (for the ``"aspect"`` policy).

    Returns:
        One ``(indices, batch)`` per distinct output size, in order of first appearance: ``indices`` are positions
        in ``images`` and ``batch`` is float32 (len(indices), 3, H, W) in [0, 1].
    """
    preprocessing = get_preprocessing(model_or_preprocessing)
    groups: dict[tuple[int, int], tuple[list[int], list[torch.Tensor]]] = {}
    for index, item in enumerate(_as_list(images)):
        tensor = preprocess_image(item, preprocessing, resolution, policy)
        indices, tensors = groups.setdefault(tuple(tensor.shape[-2:]), ([], []))
        indices.append(index)
        tensors.append(tensor)
    return [(indices, torch.stack(tensors)) for indices, tensors in groups.values()]


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    items = list(images)
    if not items:
        raise DataError("no images given to preprocess")
    return items
