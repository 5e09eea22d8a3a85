"""Detection data: sources -> checked splits, the preflight report, the Dataset and the collate function.

Sources are COCO JSON files (``dataset.train_data_sources: [{image_dir, json_file}]`` and ``val_`` / ``test_``) or a
YOLO folder (:mod:`~vfmkit.tasks.detect.yolo`). Every source of a task must share one category list; it defines
the contiguous labels 0..C-1 (ascending original id) and the original ids written back in predictions. An explicit
``dataset.num_classes`` that disagrees with the data is an error naming both.

:class:`DetectionDataset` returns ``(image, target)``: ``image`` float32 (3, R, R) RGB in [0, 1] at the model
resolution R; ``target`` ``boxes`` (T, 4) float32 cxcywh normalised to [0, 1], ``labels`` (T,) int64 contiguous,
``image_id`` (int64 scalar, the original id), ``orig_size`` (2,) int64 (height, width) of the original image and
``index`` (int64 scalar, the sample index). Crowd regions are not training targets (COCO evaluation uses them from
the ground-truth dict).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torchvision.ops import box_convert

from vfmkit.data.augment import EpochSeededDataset, sample_seed
from vfmkit.data.box_transforms import (
    IOU_CROP_MIN_SIDE,
    DetectionAugment,
    pick_scale,
    resize_batch,
    resize_with_boxes,
)
from vfmkit.data.coco import (
    CategoryList,
    CocoAnnotation,
    CocoCategory,
    CocoDataset,
    CocoImage,
    coco_dict,
    merge_categories,
    read_coco,
)
from vfmkit.data.images import load_image_rgb
from vfmkit.data.preflight import check_samples, decoded_size
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.errors import DataError
from vfmkit.tasks.detect.spec import DetectAugmentSpec, DetectDataSpec
from vfmkit.tasks.detect.yolo import read_yolo_split, yolo_names

SPLITS = ("train", "val", "test")


@dataclass
class DetectionSplit:
    """The images and objects of one split (its sources concatenated) and the task's categories."""

    name: str
    sources: list[str]
    images: list[CocoImage]
    annotations: dict[int, list[CocoAnnotation]]
    categories: list[CocoCategory] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def objects(self, image_id: int, include_crowd: bool = False) -> list[CocoAnnotation]:
        return [a for a in self.annotations.get(image_id, []) if include_crowd or not a.iscrowd]

    def ground_truth(self) -> dict[str, Any]:
        """COCO dict of the split (original ids, crowd regions included) for
        :func:`vfmkit.metrics.coco.evaluate_coco`."""
        return coco_dict(self.images, self.categories, self.annotations)

    def without(self, image_ids: set[int]) -> DetectionSplit:
        """The split without the images ``image_ids`` (and their objects)."""
        kept = [image for image in self.images if image.id not in image_ids]
        annotations = {image.id: self.annotations.get(image.id, []) for image in kept}
        return DetectionSplit(self.name, self.sources, kept, annotations, self.categories)


@dataclass
class DetectionData(CategoryList):
    """The checked splits of a detection dataset and their shared categories (``num_classes``, ``class_names``,
    ``category_ids``: the original id per contiguous label)."""

    format: str
    categories: list[CocoCategory]
    splits: dict[str, DetectionSplit] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def split(self, name: str) -> DetectionSplit | None:
        return self.splits.get(name)

    def ground_truth(self, name: str) -> dict[str, Any]:
        """COCO dict of split ``name`` (original ids) for :func:`vfmkit.metrics.coco.evaluate_coco`."""
        return self.splits[name].ground_truth()


def load_detection_data(
    spec: DetectDataSpec,
    splits: Sequence[str] = SPLITS,
    check_images: bool = True,
    workers: int = 8,
    log: Callable[[str], None] | None = print,
) -> DetectionData:
    """Read and check the splits ``splits`` of the spec (those it names).

    With ``check_images`` every image is decoded once by the shared preflight
    (:func:`vfmkit.data.preflight.check_samples`): undecodable files, and training images smaller than the training
    augmentation takes, are left out (with their objects), listed in ``unreadable`` and recorded.

    Raises:
        DataError: any problem in a source (see :mod:`vfmkit.data.coco` and :mod:`~vfmkit.tasks.detect.yolo`),
            categories that differ between sources, an image id used twice in a split, no (readable) training images
            or not a single training box when ``train`` is asked for, an image whose decoded size differs from its
            annotation, or a ``num_classes`` that disagrees with the data.
    """
    per_split = _read_sources(spec, splits, check_images, log)
    if "train" in splits and (not per_split.get("train") or not sum(len(d.images) for d in per_split["train"])):
        raise DataError(f"no (readable) training images found ({_where(spec, 'train')})")
    if not per_split:
        raise DataError(f"none of the splits {', '.join(splits)} is in the data ({_where(spec, splits[0])})")
    categories = merge_categories([d for datasets in per_split.values() for d in datasets])
    if spec.num_classes is not None and spec.num_classes != len(categories):
        raise DataError(
            f"dataset.num_classes is {spec.num_classes} but the data has {len(categories)} categories "
            f"({', '.join(c.name for c in categories[:10])}{' ...' if len(categories) > 10 else ''}); "
            "remove num_classes (it is derived) or fix the data"
        )
    data = DetectionData(spec.format, categories)
    for name, datasets in per_split.items():
        split = _merge_split(name, datasets, categories)
        if check_images and spec.format == "coco":
            split = _drop_unreadable(split, data.unreadable, _min_side(spec, name), workers, log)
        data.splits[name] = split
    if "train" in data.splits and not len(data.splits["train"]):
        raise DataError(f"the training split holds no readable images ({_where(spec, 'train')}; see above)")
    return data


def _min_side(spec: DetectDataSpec, split: str) -> int:
    """The smallest image side a split's transforms take (training: the augmentation's; else 1)."""
    return IOU_CROP_MIN_SIDE if split == "train" and spec.augment.iou_crop > 0 else 1


def _check_training_targets(spec: DetectDataSpec, train: DetectionSplit) -> None:
    """Refuse a training split without a single box to learn from (it would train to "done" on negatives).

    Raises:
        DataError: naming the split, what it holds and where the boxes were expected.
    """
    boxes = sum(len(train.objects(image.id)) for image in train.images)
    if boxes:
        return
    crowd = sum(len(train.objects(image.id, include_crowd=True)) for image in train.images)
    held = f"only {crowd} crowd region(s), which are not training targets" if crowd else "no objects at all"
    where = (
        f"labels expected in {spec.root / 'labels' / spec.train_split}"
        if spec.format == "yolo"
        else f"annotations of {_where(spec, 'train')}"
    )
    raise DataError(f"the training split has no boxes: its {len(train)} images hold {held} ({where})")


def _where(spec: DetectDataSpec, split: str) -> str:
    if spec.format == "yolo":
        return str(spec.root / "images" / getattr(spec, f"{split}_split"))
    return f"dataset.{split}_data_sources"


def _read_sources(
    spec: DetectDataSpec, splits: Sequence[str], check_images: bool, log: Callable[[str], None] | None
) -> dict[str, list[CocoDataset]]:
    """Split name -> its sources read as COCO datasets (splits the spec does not name are absent). A YOLO folder is
    decoded while it is read (its boxes need each image's size)."""
    per_split: dict[str, list[CocoDataset]] = {}
    names = yolo_names(spec.root, spec.names) if spec.format == "yolo" else []
    for name in dict.fromkeys(splits):
        if spec.format == "coco":
            sources = getattr(spec, f"{name}_data_sources") or []
            if sources:
                per_split[name] = [read_coco(s.json_file, s.image_dir) for s in sources]
        else:
            folder = getattr(spec, f"{name}_split")
            dataset = read_yolo_split(spec.root, folder, names, _min_side(spec, name), check_images, name, log)
            if dataset is not None:
                per_split[name] = [dataset]
    return per_split


def _drop_unreadable(
    split: DetectionSplit, unreadable: list[str], min_side: int, workers: int, log: Callable[[str], None] | None
) -> DetectionSplit:
    """Decode every image of ``split`` once: undecodable (or too small) ones are left out, listed and recorded.

    Raises:
        DataError: an image whose decoded size differs from its annotation (boxes would be misplaced).
    """

    def inspect(image: CocoImage) -> tuple[int, int]:
        width, height = decoded_size(image.path, min_side)
        if (width, height) != (image.width, image.height):
            raise DataError(
                f"{image.path}: the image is {width}x{height} but its annotation says {image.width}x{image.height} "
                f"(image id {image.id} of {', '.join(split.sources)}); boxes would be misplaced"
            )
        return width, height

    checked = check_samples(split.images, split.name, inspect, lambda image: image.path, workers, log=log)
    unreadable += [f"{item.split}: {item.reason}" for item in checked.left_out]
    bad = {image.id for image, kept in zip(split.images, checked.keep, strict=True) if not kept}
    return split.without(bad) if bad else split


def _merge_split(name: str, datasets: Sequence[CocoDataset], categories: list[CocoCategory]) -> DetectionSplit:
    images, annotations, owner = [], {}, {}
    for dataset in datasets:
        for image in dataset.images:
            if image.id in owner:
                raise DataError(
                    f"{dataset.json_file}: image id {image.id} is also used in {owner[image.id]} ({name} split); "
                    "image ids must be unique across the sources of a split"
                )
            owner[image.id] = dataset.json_file
            images.append(image)
            annotations[image.id] = dataset.annotations.get(image.id, [])
    return DetectionSplit(name, [str(d.json_file) for d in datasets], images, annotations, list(categories))


def format_report(data: DetectionData) -> str:
    """The preflight table: per split its images, negatives (images without objects), boxes, crowd regions and
    boxes per class; then warnings (e.g. classes without training boxes)."""
    names = data.class_names
    header = ["split", "images", "negatives", "boxes", "crowd", *names]
    rows = [header]
    per_class_train = [0] * len(names)
    for name, split in data.splits.items():
        counts = [0] * len(names)
        crowd = negatives = 0
        for image in split.images:
            objects = split.annotations.get(image.id, [])
            negatives += not objects
            for obj in objects:
                crowd += obj.iscrowd
                counts[obj.label] += not obj.iscrowd
        if name == "train":
            per_class_train = counts
        rows.append([name, len(split), negatives, sum(counts), crowd, *counts])
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = [
        f"detection dataset ({data.format}): {data.num_classes} classes: "
        + ", ".join(f"{c.name} (id {c.id})" for c in data.categories)
    ]
    lines += ["  ".join(str(v).rjust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    empty = [row[0] for row in rows[1:] if row[0] != "train" and row[3] == 0]
    lines += [f"warning: the {name} split has no boxes: its AP is undefined (None)" for name in empty]
    missing = [n for n, count in zip(names, per_class_train, strict=True) if count == 0]
    if missing and "train" in data.splits:
        lines.append(f"warning: {len(missing)} class(es) have no training boxes: {', '.join(missing[:10])}")
    return "\n".join(lines)


def preflight_detection(
    spec: DetectDataSpec, log: Callable[[str], None] = print, splits: Sequence[str] = SPLITS
) -> DetectionData:
    """Load and check the data (see :func:`load_detection_data`; left-out images are logged as they are found), then
    ``log`` the :func:`format_report` table."""
    data = load_detection_data(spec, splits, log=log)
    log(format_report(data))
    if "train" in data.splits:
        _check_training_targets(spec, data.splits["train"])
    return data


def build_train_augment(augment: DetectAugmentSpec, resolution: int) -> DetectionAugment:
    """The training augmentation of ``dataset.augment`` at the model resolution."""
    return DetectionAugment(
        resolution,
        photometric=augment.photometric,
        zoom_out=augment.zoom_out,
        iou_crop=augment.iou_crop,
        hflip=augment.hflip,
        min_box_size=augment.min_box_size,
    )


class DetectionDataset(EpochSeededDataset):
    """Samples of one split (see the module docstring for the output format).

    Args:
        split: the split.
        resolution: model resolution R (square output).
        augment: training augmentation (None: resize only, for evaluation).
        seed: the run seed; augmentation is seeded by ``(seed, epoch, index)``.
    """

    def __init__(self, split: DetectionSplit, resolution: int, augment: DetectionAugment | None = None, seed: int = 0):
        super().__init__()
        self.split = split
        self.resolution = int(resolution)
        self.augment = augment
        self.seed = int(seed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        info = self.split.images[index]
        image = pil_to_tensor(load_image_rgb(info.path))
        height, width = image.shape[-2:]
        if (width, height) != (info.width, info.height):
            raise DataError(
                f"{info.path}: the image is {width}x{height} but its annotation says {info.width}x{info.height} "
                f"(image id {info.id}); boxes would be misplaced"
            )
        objects = self.split.objects(info.id)
        boxes = torch.tensor([a.bbox for a in objects], dtype=torch.float32).reshape(-1, 4)
        boxes = box_convert(boxes, "xywh", "xyxy")
        labels = torch.tensor([a.label for a in objects], dtype=torch.int64)
        size = (self.resolution, self.resolution)
        if self.augment is not None:
            image, boxes, labels = self.augment(image, boxes, labels, sample_seed(self.seed, self.epoch, index))
        else:
            image, boxes = resize_with_boxes(image, boxes, size)
        scale = torch.tensor([size[1], size[0], size[1], size[0]], dtype=torch.float32)
        target = {
            "boxes": box_convert(boxes / scale, "xyxy", "cxcywh").clamp(0.0, 1.0),
            "labels": labels,
            "image_id": torch.tensor(info.id, dtype=torch.int64),
            "orig_size": torch.tensor([height, width], dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        return image, target


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Samples -> ``images`` (B, 3, R, R) and the list of target dicts."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


class MultiScaleCollate:
    """Collate, then resize the batch to a size drawn from ``scales`` per batch, reproducibly from
    ``(seed, epoch, first sample index)`` (boxes are normalised, so targets are unchanged).

    Args:
        scales: square sizes (multiples of 32).
        dataset: the training dataset (its ``seed`` and current ``epoch`` are read).
    """

    def __init__(self, scales: Sequence[int], dataset: DetectionDataset):
        self.scales = [int(s) for s in scales]
        self.dataset = dataset

    def __call__(self, batch):
        images, targets = collate_detection(batch)
        size = pick_scale(self.scales, self.dataset.seed, self.dataset.epoch, int(targets[0]["index"]))
        return resize_batch(images, size), targets
