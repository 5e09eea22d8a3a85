"""Joint augmentation of images and masks for the dense tasks, evaluation resizing and a batching helper.

One call of :class:`JointAugment` transforms any number of same-sized images plus an optional mask with ONE set of
random parameters (torchvision.transforms.v2 with ``tv_tensors``): the scale, the crop box, the flips and the colour
jitter are identical for every image of the call (a change pair, the lighting conditions of a golden/test sample),
and the mask follows the geometry with nearest-neighbour resampling. Every random choice is drawn from a torch RNG
seeded by the sample seed (:func:`~vfmkit.data.augment.sample_seed` of ``(seed, epoch, index)``), so the result
depends only on that seed; the global RNG state is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vfmkit.data.preprocess import resize

MaskSize = Literal["full", "resized"]


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``N`` or ``(H, W)`` -> ``(H, W)`` of positive ints."""
    pair = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
    return pair


class JointAugmentOptions(Protocol):
    """What :class:`JointAugment` reads (the dense tasks' ``dataset.augment`` spec sections have these fields)."""

    scale_range: tuple[float, float] | None
    scale_reference: Literal["crop", "image"]
    crop_size: int | None
    hflip: float
    vflip: float
    color_jitter: float


class JointAugment:
    """Random scale, crop, flips and colour jitter applied jointly to images and a mask.

    Args:
        size: output (H, W) (or side) when ``augment.crop_size`` is unset; the crop is ``crop_size`` x
            ``crop_size`` otherwise.
        augment: the options (the ``dataset.augment`` spec section, :class:`~vfmkit.spec.dense.DenseAugmentSpec`).
        ignore_index: mask value of pixels padded in by the crop.
    """

    def __init__(self, size: int | Sequence[int], augment: JointAugmentOptions, ignore_index: int = 255) -> None:
        self.size = as_size(augment.crop_size if augment.crop_size is not None else size)
        self.augment = augment
        self.ignore_index = int(ignore_index)
        steps: list[torch.nn.Module] = []
        if augment.scale_range is not None:
            fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: self.ignore_index}
            steps.append(v2.RandomCrop(self.size, pad_if_needed=True, fill=fill))
        if augment.hflip > 0:
            steps.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.vflip > 0:
            steps.append(v2.RandomVerticalFlip(augment.vflip))
        if augment.color_jitter > 0:
            strength = augment.color_jitter
            steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
        self._steps = v2.Compose(steps) if steps else None

    def __call__(
        self, images: Sequence[torch.Tensor], mask: torch.Tensor | None, seed: int
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Augment one sample.

        Args:
            images: float32 (3, H, W) RGB images in [0, 1], all of the same H x W.
            mask: int64 (H, W) class indices, or ``None``.
            seed: the sample seed; the same seed gives the same output.

        Returns:
            ``(images, mask)``: float32 (3, h, w) in [0, 1] and int64 (h, w) (``ignore_index`` where padded), with
            (h, w) the output size.
        """
        if not images:
            raise ValueError("JointAugment needs at least one image")
        shapes = {tuple(image.shape[-2:]) for image in [*images, *([] if mask is None else [mask])]}
        if len(shapes) != 1:
            raise ValueError(f"joint augmentation needs images and mask of one size, got {sorted(shapes)}")
        target = list(self._scaled_size(*next(iter(shapes)), seed))
        items: list[torch.Tensor] = [tv_tensors.Image(image) for image in images]
        if mask is not None:
            items.append(tv_tensors.Mask(mask.to(torch.int64)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            items = [TF.resize(item, target, antialias=True) for item in items]
            if self._steps is not None:
                items = list(self._steps(tuple(items)))
        out = [item.as_subclass(torch.Tensor).clamp(0.0, 1.0).contiguous() for item in items[: len(images)]]
        out_mask = items[-1].as_subclass(torch.Tensor).contiguous() if mask is not None else None
        return out, out_mask

    def _scaled_size(self, height: int, width: int, seed: int) -> tuple[int, int]:
        """The size before cropping (the random scale drawn from its own stream of ``seed``)."""
        if self.augment.scale_range is None:
            return self.size
        low, high = self.augment.scale_range
        generator = torch.Generator().manual_seed(seed ^ 0x5CA1E)
        factor = low + (high - low) * float(torch.rand((), generator=generator))
        if self.augment.scale_reference == "crop":
            factor *= min(self.size) / min(height, width)
        return max(1, round(height * factor)), max(1, round(width * factor))


def eval_transform(
    images: Sequence[torch.Tensor],
    mask: torch.Tensor | None,
    size: int | Sequence[int] | None,
    mask_size: MaskSize = "full",
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The deterministic evaluation transform.

    Args:
        images: float32 (3, H, W) images in [0, 1].
        mask: int64 (H, W) or ``None``.
        size: resize the images to this (H, W) (or side) with the bilinear antialiased resize used by ``predict``;
            ``None`` keeps the original size (the model then runs e.g. sliding-window inference).
        mask_size: ``"full"`` keeps the mask at the original resolution (metrics on original pixels: upsample the
            logits to it); ``"resized"`` resizes it with nearest neighbour to ``size``.

    Returns:
        ``(images, mask)`` as described.
    """
    if mask_size not in ("full", "resized"):
        raise ValueError(f"mask_size must be 'full' or 'resized', got {mask_size!r}")
    if size is None:
        return list(images), mask
    target = as_size(size)
    out = [resize(image, target) for image in images]
    if mask is not None and mask_size == "resized" and tuple(mask.shape[-2:]) != target:
        resized = TF.resize(tv_tensors.Mask(mask), list(target))
        mask = resized.as_subclass(torch.Tensor).contiguous()
    return out, mask


def collate_dense(batch: Sequence[tuple]) -> tuple:
    """Batch dataset items position by position: same-shaped tensors are stacked, tensors of different shapes are
    kept as a list (e.g. full-resolution masks of images of different sizes), ints become an int64 tensor.

    Args:
        batch: items of equal length, e.g. ``(image, mask, index)``.

    Returns:
        A tuple with one entry per item position.
    """
    out = []
    for values in zip(*batch, strict=True):
        first = values[0]
        if isinstance(first, torch.Tensor):
            same = all(v.shape == first.shape for v in values)
            out.append(torch.stack(values) if same else list(values))
        elif isinstance(first, int):
            out.append(torch.tensor(values, dtype=torch.int64))
        else:
            out.append(list(values))
    return tuple(out)
