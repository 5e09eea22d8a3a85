"""Semantic-segmentation data: image/mask splits, a preflight check and the dataset.

Layout (see :class:`~vfmkit.spec.dense.SegmentDataSpec`): ``root/images/<split>/**/<stem>.<ext>`` and
``root/masks/<split>/**/<stem>.<ext>``. Images and masks pair up by relative folder and stem (after removing
``image_suffix`` / ``mask_suffix``), whatever their extensions (any image suffix); hidden files are skipped and,
when a suffix is set, only files whose stem ends with it are taken. Masks are decoded through the dataset's
:class:`~vfmkit.data.palette.Palette` into int64 (H, W) class indices with 255 (``ignore_index``) for ignored pixels.
Nothing is ever written into the dataset folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vfmkit.data.augment import EpochSeededDataset, sample_seed
from vfmkit.data.dense_augment import JointAugment, MaskSize, collate_dense, eval_transform
from vfmkit.data.images import index_by_stem, load_image_rgb
from vfmkit.data.palette import Palette, colorize, default_colors, overlay
from vfmkit.data.preflight import check_samples
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.errors import DataError, UnreadableFileError
from vfmkit.spec.dense import DenseAugmentSpec
from vfmkit.tasks.segment.spec import SegmentAugmentSpec, SegmentDataSpec

__all__ = [
    "Palette",
    "SegmentationDataset",
    "SegmentationPreflightReport",
    "SegmentationSplit",
    "collate_dense",
    "colorize",
    "default_colors",
    "load_mask",
    "load_segment_split",
    "overlay",
    "preflight_segmentation",
]

SPLITS = ("train", "val", "test")


@dataclass
class SegmentationSplit:
    """The image/mask pairs of one split, sorted by pairing key.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        images: (N,) numpy str array of image paths (an array, not a list of objects, so forked DataLoader
            workers do not copy it page by page through reference counting).
        masks: (N,) numpy str array of the matching mask paths.
        source: the split's image folder (for messages).
    """

    name: str
    images: np.ndarray
    masks: np.ndarray
    source: Path | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.str_).reshape(-1)
        self.masks = np.asarray(self.masks, dtype=np.str_).reshape(-1)
        if len(self.images) != len(self.masks):
            raise ValueError(f"{len(self.images)} images but {len(self.masks)} masks in split {self.name!r}")

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        """The image file of sample ``index``."""
        return Path(str(self.images[index]))

    def mask_path(self, index: int) -> Path:
        """The mask file of sample ``index``."""
        return Path(str(self.masks[index]))

    def subset(self, keep: np.ndarray) -> SegmentationSplit:
        """The pairs where the boolean (N,) ``keep`` is true."""
        return SegmentationSplit(self.name, self.images[keep], self.masks[keep], self.source)


def _split_folder(spec: SegmentDataSpec, kind: str, split: str) -> Path:
    return Path(spec.root) / getattr(spec, f"{kind}_dir") / getattr(spec, f"{split}_split")


def load_segment_split(spec: SegmentDataSpec, split: str) -> SegmentationSplit | None:
    """Pair the images and masks of one split by stem (no file is opened).

    Args:
        spec: the ``dataset`` spec (absolute paths).
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        The split, or ``None`` when a val/test image folder does not exist.

    Raises:
        DataError: a missing training image folder, a missing mask folder, duplicate stems, or images without a
            mask / masks without an image (the unmatched files are listed by name).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    image_dir, mask_dir = _split_folder(spec, "images", split), _split_folder(spec, "masks", split)
    if not image_dir.is_dir():
        if split == "train":
            raise DataError(f"training image folder {image_dir} does not exist (dataset.root/images_dir/train_split)")
        return None
    if not mask_dir.is_dir():
        raise DataError(f"mask folder {mask_dir} does not exist (expected masks of {image_dir} there)")
    images = index_by_stem(image_dir, spec.image_suffix)
    masks = index_by_stem(mask_dir, spec.mask_suffix)
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask or no_image:
        parts = []
        if no_mask:
            parts.append(f"{len(no_mask)} image(s) in {image_dir} without a mask: {_preview(no_mask)}")
        if no_image:
            parts.append(f"{len(no_image)} mask(s) in {mask_dir} without an image: {_preview(no_image)}")
        raise DataError(
            "; ".join(parts) + f" (images and masks pair by stem; mask stem = image stem + {spec.mask_suffix!r})"
        )
    keys = sorted(images)
    return SegmentationSplit(split, [str(images[k]) for k in keys], [str(masks[k]) for k in keys], image_dir)


def _preview(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def load_mask(path: str | Path, palette: Palette) -> np.ndarray:
    """Decode a mask file into int64 (H, W) class indices (``ignore_index`` where ignored).

    Raises:
        DataError: an unreadable file or unknown mask values (naming the file).
    """
    path = Path(path)
    try:
        with Image.open(path) as mask:
            mask.load()
            return palette.encode(mask, path)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UnreadableFileError(f"cannot read mask {path}: {reason}") from exc


@dataclass
class SegmentationPreflightReport:
    """What :func:`preflight_segmentation` found.

    Attributes:
        palette: the dataset palette.
        splits: split name -> split (``None`` when absent).
        pixel_counts: split name -> int64 (K,) pixels per class (absent splits left out).
        ignored_pixels: split name -> number of ignored pixels.
        warnings: human-readable lines.
    """

    palette: Palette
    splits: dict[str, SegmentationSplit | None]
    pixel_counts: dict[str, np.ndarray] = field(default_factory=dict)
    ignored_pixels: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def split(self, name: str) -> SegmentationSplit | None:
        """The split ``name``, or ``None``."""
        return self.splits.get(name)

    def format(self) -> str:
        """A text report: images per split, pixels per class and split (a table), warnings."""
        names = [n for n in self.splits if n in self.pixel_counts]
        rows = [["class", *names]]
        for k, name in enumerate(self.palette.names):
            rows.append([name, *(str(int(self.pixel_counts[n][k])) for n in names)])
        rows.append(["(ignored)", *(str(self.ignored_pixels[n]) for n in names)])
        rows.append(["images", *(str(len(self.splits[n])) for n in names)])
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        table = ["  " + "  ".join([r[0].ljust(widths[0]), *map(str.rjust, r[1:], widths[1:])]) for r in rows]
        lines = ["pixels per class and split:", *table]
        if self.unreadable:  # each listed by the decoding preflight as it was found
            lines.append(f"left out (unreadable): {len(self.unreadable)} pair(s), listed above")
        if self.warnings:
            lines += ["warnings:", *(f"  - {w}" for w in self.warnings)]
        return "\n".join(lines)


def preflight_segmentation(
    spec: SegmentDataSpec, splits: Iterable[str] = ("train", "val"), workers: int = 8
) -> SegmentationPreflightReport:
    """Check a segmentation dataset before training: pairing, sizes, mask values, pixels per class.

    Every image and mask is decoded (in parallel threads, with a progress bar on a terminal); pairs whose files do
    not decode are left out and listed.

    Args:
        spec: the ``dataset`` spec (absolute paths).
        splits: the splits to check.
        workers: threads for reading the files.

    Returns:
        The report.

    Raises:
        DataError: any error of :func:`load_segment_split`; an image and mask of different sizes, or unknown mask
            values (each naming the file); a training split without readable pairs.
    """
    palette = Palette.from_spec(spec)
    loaded = {name: load_segment_split(spec, name) for name in dict.fromkeys(splits)}
    if "test" in loaded and loaded["test"] is None:
        del loaded["test"]  # optional (train evaluates it when given): an absent one is not reported
    report = SegmentationPreflightReport(palette, loaded)
    for name, split in loaded.items():
        if split is None:
            report.warnings.append(f"no {name} split ({_split_folder(spec, 'images', name)} not found)")
            continue
        if not len(split):
            if name == "train":
                raise DataError(f"the training split {split.source} holds no images")
            report.warnings.append(f"the {name} split {split.source} holds no images")
        checked = check_samples(
            range(len(split)),
            name,
            lambda i, s=split: _pair_counts(s, i, palette),
            path_of=split.image_path,
            workers=workers,
            what="image-mask pairs",
        )
        if checked.left_out:  # left out, listed and recorded; the rest of the split trains
            report.unreadable += [f"{name}: {item.reason}" for item in checked.left_out]
            split = loaded[name] = report.splits[name] = split.subset(checked.keep)
            if name == "train" and not len(split):
                raise DataError(f"the training split {split.source} holds no readable images")
        counts = checked.kept_values
        total = np.sum(counts, axis=0) if counts else np.zeros(len(palette) + 1, dtype=np.int64)
        report.pixel_counts[name] = total[:-1].astype(np.int64)
        report.ignored_pixels[name] = int(total[-1])
        absent = [c for c, n in zip(palette.names, report.pixel_counts[name], strict=True) if n == 0]
        if absent and len(split):
            report.warnings.append(f"{len(absent)} class(es) have no {name} pixels: {_preview(absent)}")
    return report


def _pair_counts(split: SegmentationSplit, index: int, palette: Palette) -> np.ndarray:
    """int64 (K + 1,) pixels per class plus ignored pixels of one pair, after decoding both files and checking their
    sizes.

    Raises:
        UnreadableFileError: a file does not decode (the pair is left out); DataError: sizes or mask values wrong.
    """
    image_path, mask_path = split.image_path(index), split.mask_path(index)
    size = load_image_rgb(image_path).size  # a full decode: a truncated file fails here, not mid-epoch
    mask = load_mask(mask_path, palette)
    if (mask.shape[1], mask.shape[0]) != size:
        raise DataError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is {size[0]}x{size[1]} "
            "(W x H); a mask must have its image's size"
        )
    classes = np.bincount(mask[(mask >= 0) & (mask < len(palette))].ravel(), minlength=len(palette))
    return np.append(classes, np.count_nonzero(mask == palette.ignore_index)).astype(np.int64)


class SegmentationDataset(EpochSeededDataset):
    """Images and class-index masks of a split, augmented jointly in training.

    Training items go through :class:`~vfmkit.data.dense_augment.JointAugment` (random scale, crop padded with
    ``ignore_index``, flips, colour jitter on the image only) seeded by ``(seed, epoch, index)``: reproducible
    whatever the number of workers; the epoch lives in shared memory so :meth:`set_epoch` (e.g. from
    :class:`~vfmkit.data.sampling.EpochSeededSampler`) reaches persistent workers. Evaluation items are resized to
    ``size`` (bilinear antialiased, like ``predict``) or kept at their size (``size=None``), with the mask at full
    resolution (``mask_size="full"``, metrics on original pixels) or nearest-resized to ``size``. Batch items of
    different sizes with :func:`~vfmkit.data.dense_augment.collate_dense`.

    Args:
        split: the split to serve.
        palette: the dataset palette (decodes the masks).
        size: training output side / (H, W) (the crop, unless ``augment.crop_size`` is set) and evaluation resize
            target; ``None`` keeps evaluation images at their size (not allowed in training).
        train: apply the random joint augmentation.
        augment: the augmentation spec (default ``SegmentAugmentSpec()``); ignored when ``train`` is false.
        seed: the run seed.
        mask_size: ``"full"`` or ``"resized"`` (evaluation only).
    """

    def __init__(
        self,
        split: SegmentationSplit,
        palette: Palette,
        size: int | tuple[int, int] | None,
        train: bool = False,
        augment: DenseAugmentSpec | None = None,
        seed: int = 0,
        mask_size: MaskSize = "full",
    ) -> None:
        augment = augment or SegmentAugmentSpec()
        if train and size is None and augment.crop_size is None:
            raise ValueError("training needs a size (or augment.crop_size)")
        self.split, self.palette, self.size = split, palette, size
        self.train, self.seed, self.mask_size = bool(train), int(seed), mask_size
        self.augment = JointAugment(size or augment.crop_size, augment, palette.ignore_index) if self.train else None
        super().__init__()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Returns ``(image float32 (3, h, w) in [0, 1], mask int64 (h', w') in 0..K-1 or ignore_index, index)``.

        Raises:
            DataError: an unreadable image or mask, unknown mask values, or image and mask of different sizes.
        """
        index = int(index)
        image_path = self.split.image_path(index)
        image = pil_to_tensor(load_image_rgb(image_path))
        mask = torch.from_numpy(load_mask(self.split.mask_path(index), self.palette))
        if tuple(mask.shape) != tuple(image.shape[-2:]):
            raise DataError(
                f"mask {self.split.mask_path(index)} is {tuple(mask.shape)} but image {image_path} is "
                f"{tuple(image.shape[-2:])} (H, W); a mask must have its image's size"
            )
        if self.augment is not None:
            images, mask = self.augment([image], mask, sample_seed(self.seed, self.epoch, index))
        else:
            images, mask = eval_transform([image], mask, self.size, self.mask_size)
        return images[0], mask, index
