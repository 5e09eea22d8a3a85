"""Box-aware augmentation for detection, on torchvision ``transforms.v2`` with ``tv_tensors.BoundingBoxes``.

Training (RT-DETR's pipeline): photometric distortion, zoom-out, IoU crop, sanitising (boxes that left the image or
became smaller than ``min_box_size`` pixels are dropped with their labels), horizontal flip, and a resize to the
model resolution. Multi-scale training resizes a whole *batch* to a size drawn per batch
(:func:`pick_scale` + :func:`resize_batch`), because boxes are normalised and images in a batch share one size.
Evaluation resizes to the model resolution (aspect ratio not kept, as RT-DETR; boxes are normalised, so they map
back to the original image by its width and height).

Every random choice is drawn from a torch RNG seeded by :func:`vfmkit.data.augment.sample_seed` of
``(seed, epoch, index)`` (the caller passes the seed), so a sample's augmentation does not depend on worker count
or fetch order, and the global RNG is left untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from vfmkit.data.augment import sample_seed
from vfmkit.data.preprocess import resize

IOU_CROP_MIN_SIDE = 4
"""Smallest image side ``RandomIoUCrop`` takes (its smallest crop scale is 0.3: ``int(0.3 * 3) == 0``)."""


class DetectionAugment:
    """Training augmentation of one image and its boxes.

    Args:
        size: output (H, W) or side in pixels.
        photometric: probability of ``RandomPhotometricDistort`` (brightness, contrast, saturation, hue, channels).
        zoom_out: probability of ``RandomZoomOut`` (canvas up to 4x, filled with ``fill``).
        iou_crop: probability of ``RandomIoUCrop`` (SSD-style crop keeping boxes by IoU); skipped without boxes.
        hflip: probability of a horizontal flip.
        fill: zoom-out canvas value in [0, 1].
        min_box_size: boxes smaller than this (pixels, either side) after the geometric steps are dropped.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        photometric: float = 0.8,
        zoom_out: float = 0.5,
        iou_crop: float = 0.8,
        hflip: float = 0.5,
        fill: float = 0.0,
        min_box_size: float = 1.0,
    ):
        self.size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
        for name, p in (("photometric", photometric), ("zoom_out", zoom_out), ("iou_crop", iou_crop), ("hflip", hflip)):
            if not 0 <= p <= 1:
                raise ValueError(f"augmentation probability {name} must be in [0, 1], got {p}")
        self.photometric = v2.RandomPhotometricDistort(p=photometric) if photometric > 0 else None
        self.zoom_out = v2.RandomZoomOut(fill=fill, side_range=(1.0, 4.0), p=zoom_out) if zoom_out > 0 else None
        self.iou_crop = v2.RandomApply([v2.RandomIoUCrop()], p=iou_crop) if iou_crop > 0 else None
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=min_box_size)
        self.flip = v2.RandomHorizontalFlip(hflip) if hflip > 0 else None

    @property
    def min_image_side(self) -> int:
        """The smallest image side (pixels) these transforms take: ``RandomIoUCrop`` divides by a crop side of
        ``int(0.3 * side)``, which is 0 below 4 px; the preflight leaves smaller training images out."""
        return IOU_CROP_MIN_SIDE if self.iou_crop is not None else 1

    def __call__(
        self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augment one sample.

        Args:
            image: float32 (3, H, W) RGB in [0, 1].
            boxes: (N, 4) float xyxy in pixels of ``image``.
            labels: (N,) int64.
            seed: the sample seed (:func:`~vfmkit.data.augment.sample_seed`); the same seed gives the same output.

        Returns:
            ``image`` float32 (3, size) in [0, 1], ``boxes`` (N', 4) xyxy pixels of the output, ``labels`` (N',).
        """
        height, width = image.shape[-2:]
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes.float(), format="XYXY", canvas_size=(height, width)),
            "labels": labels,
        }
        image = tv_tensors.Image(image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.photometric is not None:
                image = self.photometric(image)
            if self.zoom_out is not None:
                image, target = self.zoom_out(image, target)
            if self.iou_crop is not None and len(target["labels"]):
                image, target = self.iou_crop(image, target)
            image, target = self.sanitize(image, target)
            if self.flip is not None:
                image, target = self.flip(image, target)
        out_image, out_boxes = resize_with_boxes(
            image.as_subclass(torch.Tensor).clamp(0, 1), target["boxes"], self.size
        )
        return out_image, out_boxes, target["labels"]


def resize_with_boxes(
    image: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a float (3, H, W) image in [0, 1] to ``size`` (H', W') and scale its xyxy pixel boxes (N, 4) with it."""
    height, width = image.shape[-2:]
    scale = torch.tensor([size[1] / width, size[0] / height] * 2, dtype=torch.float32)
    return resize(image.contiguous(), size), boxes.as_subclass(torch.Tensor).float() * scale


def pick_scale(scales: Sequence[int], seed: int, epoch: int, key: int) -> int:
    """One of ``scales`` for the batch identified by ``key`` (e.g. its first sample index), reproducible from
    ``(seed, epoch, key)``."""
    return int(scales[sample_seed(seed, epoch, key, stream="scale") % len(scales)])


def resize_batch(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of a float batch (B, 3, H, W) in [0, 1] to ``size``; unchanged when it fits."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0.0, 1.0)
