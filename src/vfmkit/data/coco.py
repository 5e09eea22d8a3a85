"""COCO instances JSON (``images`` / ``annotations`` / ``categories``), read into plain dataclasses and checked.

Used by every task that reads COCO (detection, universal segmentation). Category ids may be sparse (1, 3, 7 ...):
they are mapped to contiguous labels 0..C-1 in ascending id order, and the original ids are kept to write
predictions back. Images without annotations are allowed (negatives) and counted. Boxes are COCO ``[x, y, w, h]``
in pixels; the raw ``segmentation`` (polygons or RLE) is kept untouched for the tasks that need it.

:func:`read_coco` reads through the shared :class:`~vfmkit.data.json_reader.JsonReader` and refuses, with one
line naming the JSON file and the offending key / index / id: invalid JSON (line and column), a missing or mistyped
key, duplicate ids, an annotation whose ``image_id`` or ``category_id`` is unknown, a box with non-positive width or
height or outside its image (by more than ``BOX_SLACK`` pixels, which is clipped away), an ``area <= 0`` (COCO
evaluation would silently ignore the object), a ``segmentation`` COCO tools cannot read or polygons outside the
image (:func:`check_segmentation`), and image files that do not exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfmkit.data.json_reader import JsonReader, read_json
from vfmkit.errors import DataError

BOX_SLACK = 1.0
"""Pixels a box may extend past the image border (rounding in annotation tools); it is clipped to the image."""


@dataclass(frozen=True)
class CocoCategory:
    """One category: original ``id``, contiguous ``label`` (0..C-1), ``name`` and ``supercategory``."""

    id: int
    label: int
    name: str
    supercategory: str = ""


@dataclass(frozen=True)
class CocoImage:
    """One image: COCO ``id``, ``file_name`` (relative to the image folder), ``width``, ``height`` and the
    resolved ``path``."""

    id: int
    file_name: str
    width: int
    height: int
    path: Path


@dataclass(frozen=True)
class CocoAnnotation:
    """One object.

    Attributes:
        id: annotation id.
        image_id: its image's id.
        category_id: original category id; ``label``: its contiguous label.
        bbox: (x, y, w, h) pixels, clipped to the image.
        area: the JSON ``area`` (w * h when absent).
        iscrowd: crowd region (ignored in training, handled by COCO evaluation).
        segmentation: the raw polygons / RLE, or None.
    """

    id: int
    image_id: int
    category_id: int
    label: int
    bbox: tuple[float, float, float, float]
    area: float
    iscrowd: bool = False
    segmentation: Any = None


class CategoryList:
    """Label-order views of a ``categories`` list (shared by every holder of COCO categories)."""

    categories: list[CocoCategory]

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def class_names(self) -> list[str]:
        """Names in label order."""
        return [c.name for c in self.categories]

    @property
    def category_ids(self) -> list[int]:
        """Original category id of each contiguous label."""
        return [c.id for c in self.categories]


@dataclass
class CocoDataset(CategoryList):
    """A COCO instances file.

    Attributes:
        json_file: the file read; image_dir: the folder ``file_name`` is relative to.
        images: in file order.
        categories: in contiguous-label order (ascending original id).
        annotations: image id -> its annotations (file order); every image has an entry, possibly empty.
    """

    json_file: Path
    image_dir: Path
    images: list[CocoImage]
    categories: list[CocoCategory]
    annotations: dict[int, list[CocoAnnotation]] = field(default_factory=dict)

    @property
    def num_negatives(self) -> int:
        """Images without any annotation."""
        return sum(1 for image in self.images if not self.annotations.get(image.id))

    def to_coco_dict(self) -> dict[str, Any]:
        """The (checked, clipped) content as a COCO dict with the original ids (ground truth for COCO evaluation)."""
        return coco_dict(self.images, self.categories, self.annotations)


def coco_dict(
    images: Sequence[CocoImage], categories: Sequence[CocoCategory], annotations: dict[int, list[CocoAnnotation]]
) -> dict[str, Any]:
    """A COCO instances dict (original ids, ``segmentation`` kept where present) of these images and objects."""
    return {
        "images": [{"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height} for i in images],
        "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in categories],
        "annotations": [annotation_dict(a) for image in images for a in annotations.get(image.id, [])],
    }


def annotation_dict(annotation: CocoAnnotation) -> dict[str, Any]:
    """One annotation as a COCO dict (original ids, ``segmentation`` kept where present)."""
    a = annotation
    return {
        "id": a.id,
        "image_id": a.image_id,
        "category_id": a.category_id,
        "bbox": list(a.bbox),
        "area": a.area,
        "iscrowd": int(a.iscrowd),
        **({"segmentation": a.segmentation} if a.segmentation is not None else {}),
    }


def read_coco(json_file: str | Path, image_dir: str | Path, check_files: bool = True) -> CocoDataset:
    """Read and check a COCO instances file.

    Args:
        json_file: the ``.json`` file.
        image_dir: the folder the images' ``file_name`` is relative to.
        check_files: refuse image files that do not exist.

    Returns:
        The :class:`CocoDataset`.

    Raises:
        DataError: a missing/invalid file or any problem listed in the module docstring, naming the file and where.
    """
    json_file, image_dir = Path(json_file), Path(image_dir)
    data = read_json(json_file, "COCO annotation file")
    reader = _Reader(json_file)
    expected = "an object with images, annotations and categories"
    categories = reader.categories(reader.list_of(data, "categories", expected=expected))
    images = reader.images(reader.list_of(data, "images", expected=expected), image_dir)
    annotations = reader.annotations(reader.list_of(data, "annotations", expected=expected), images, categories)
    if check_files:
        _check_image_files(json_file, image_dir, images.values())
    return CocoDataset(json_file, image_dir, list(images.values()), list(categories.values()), annotations)


def read_coco_images(json_file: str | Path, image_dir: str | Path) -> list[CocoImage]:
    """The ``images`` list of any COCO-style JSON (instances, panoptic, captions), checked as :func:`read_coco` checks
    it (ids, file names, sizes), in file order; the files themselves are not checked.

    Raises:
        DataError: a missing/invalid file or a malformed ``images`` entry, naming the file, the index and the key.
    """
    json_file = Path(json_file)
    reader = _Reader(json_file)
    data = read_json(json_file, "COCO annotation file")
    return list(reader.images(reader.list_of(data, "images"), Path(image_dir)).values())


def _check_image_files(json_file: Path, image_dir: Path, images) -> None:
    missing = [image for image in images if not image.path.is_file()]
    if missing:
        first = missing[0]
        raise DataError(
            f"{json_file}: {len(missing)} image file(s) not found under {image_dir}, e.g. image id {first.id} "
            f"file_name {first.file_name!r} ({first.path})"
        )


class _Reader(JsonReader):
    """The COCO sections, read through :class:`~vfmkit.data.json_reader.JsonReader`."""

    def categories(self, items: list) -> dict[int, CocoCategory]:
        raw: dict[int, tuple[str, str]] = {}
        for index, item in enumerate(items):
            where = f"categories[{index}]"
            cat_id = self.get(item, where, "id", int)
            if cat_id in raw:
                raise self.fail(where, f"duplicate category id {cat_id}")
            raw[cat_id] = (self.get(item, where, "name", str), self.get(item, where, "supercategory", str, ""))
        if not raw:
            raise self.fail("categories", "the list is empty; at least one category is needed")
        return {cid: CocoCategory(cid, label, *raw[cid]) for label, cid in enumerate(sorted(raw))}

    def images(self, items: list, image_dir: Path) -> dict[int, CocoImage]:
        images: dict[int, CocoImage] = {}
        for index, item in enumerate(items):
            where = f"images[{index}]"
            image_id = self.get(item, where, "id", int)
            if image_id in images:
                raise self.fail(where, f"duplicate image id {image_id}")
            name = self.get(item, where, "file_name", str)
            width, height = self.get(item, where, "width", int), self.get(item, where, "height", int)
            if width <= 0 or height <= 0:
                raise self.fail(f"{where} (id {image_id})", f"width and height must be positive, got {width}x{height}")
            images[image_id] = CocoImage(image_id, name, width, height, image_dir / name)
        return images

    def annotations(
        self, items: list, images: dict[int, CocoImage], categories: dict[int, CocoCategory]
    ) -> dict[int, list[CocoAnnotation]]:
        out: dict[int, list[CocoAnnotation]] = {image_id: [] for image_id in images}
        seen: set[int] = set()
        for index, item in enumerate(items):
            annotation = self._annotation(item, index, images, categories)
            if annotation.id in seen:
                raise self.fail(f"annotations[{index}]", f"duplicate annotation id {annotation.id}")
            seen.add(annotation.id)
            out[annotation.image_id].append(annotation)
        return out

    def _annotation(
        self, item: Any, index: int, images: dict[int, CocoImage], categories: dict[int, CocoCategory]
    ) -> CocoAnnotation:
        where = f"annotations[{index}]"
        ann_id = self.get(item, where, "id", int)
        where = f"annotations[{index}] (id {ann_id})"
        image_id = self.get(item, where, "image_id", int)
        if image_id not in images:
            raise self.fail(where, f"image_id {image_id} is not in images")
        category_id = self.get(item, where, "category_id", int)
        if category_id not in categories:
            known = ", ".join(str(c) for c in categories)
            raise self.fail(where, f"category_id {category_id} is not in categories (ids {known})")
        image = images[image_id]
        bbox = self._bbox(self.get(item, where, "bbox", list), where, image)
        area = float(self.get(item, where, "area", float, bbox[2] * bbox[3]))
        if area <= 0:
            raise self.fail(
                where,
                f"area {area:g} must be positive (COCO evaluation ignores objects whose area is outside [0, 1e10], "
                "and their matches); fix it, or remove the key to have it computed from the box",
            )
        crowd = self.get(item, where, "iscrowd", (int, bool), 0)
        segmentation = item.get("segmentation")
        if segmentation is not None:
            check_segmentation(self, segmentation, where, image.width, image.height)
        return CocoAnnotation(
            ann_id, image_id, category_id, categories[category_id].label, bbox, area, bool(crowd), segmentation
        )

    def _bbox(self, bbox: list, where: str, image: CocoImage) -> tuple[float, float, float, float]:
        if len(bbox) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
            raise self.fail(where, f"bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            raise self.fail(where, f"bbox {bbox} must have a positive width and height")
        if x < -BOX_SLACK or y < -BOX_SLACK or x + w > image.width + BOX_SLACK or y + h > image.height + BOX_SLACK:
            raise self.fail(
                where, f"bbox {bbox} (x, y, w, h) lies outside its image {image.id} ({image.width}x{image.height})"
            )
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(image.width)), min(y + h, float(image.height))
        if x1 <= x0 or y1 <= y0:
            raise self.fail(where, f"bbox {bbox} has no area inside its image {image.id}")
        return (x0, y0, x1 - x0, y1 - y0)


def check_segmentation(reader: JsonReader, segmentation: Any, where: str, width: int, height: int) -> None:
    """Refuse a ``segmentation`` COCO tools cannot read, or polygons outside their image.

    Polygons: a list of ``[x1, y1, x2, y2, ...]`` lists of finite numbers, each with an even count >= 6, every point
    within ``BOX_SLACK`` pixels of the image (the same bound as boxes). RLE: an object with ``size`` ``[H, W]`` equal
    to the image's and ``counts`` (a list of non-negative integers, or the compressed string).

    Raises:
        DataError: naming the file, the annotation and what is wrong.
    """
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size)):
            raise reader.fail(where, f"RLE segmentation needs 'size' [height, width], got {size!r}")
        if size != [height, width]:
            raise reader.fail(
                where, f"RLE segmentation size {size} differs from its image's [height, width] [{height}, {width}]"
            )
        valid_list = isinstance(counts, list) and all(type(v) is int and v >= 0 for v in counts)
        if not (isinstance(counts, str) or valid_list):
            raise reader.fail(where, "RLE segmentation 'counts' must be a list of non-negative integers or a string")
        return
    if not isinstance(segmentation, list):
        raise reader.fail(where, f"segmentation must be polygons (a list of lists) or RLE, got {segmentation!r:.80}")
    for index, polygon in enumerate(segmentation):
        place = f"{where}: segmentation[{index}]"
        points = reader.numbers(polygon, place, "polygon")
        if len(points) < 6 or len(points) % 2:
            raise reader.fail(place, f"a polygon needs an even number >= 6 of coordinates, got {len(points)}")
        xs, ys = points[0::2], points[1::2]
        if min(xs) < -BOX_SLACK or min(ys) < -BOX_SLACK or max(xs) > width + BOX_SLACK or max(ys) > height + BOX_SLACK:
            raise reader.fail(
                place,
                f"polygon spans x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g}, outside its image "
                f"({width}x{height}); coordinates are pixels within the image",
            )


def merge_categories(datasets: Sequence[CocoDataset]) -> list[CocoCategory]:
    """The common category list of several COCO files of one task.

    Raises:
        DataError: two files disagree (different ids, or a different name for the same id), naming both files.
    """
    first = datasets[0]
    reference = [(c.id, c.name) for c in first.categories]
    for other in datasets[1:]:
        current = [(c.id, c.name) for c in other.categories]
        if current != reference:
            diff = sorted(set(current) ^ set(reference))[:4]
            raise DataError(
                f"{other.json_file}: categories differ from {first.json_file} (e.g. id/name {diff}); every source "
                "of a task must use the same categories"
            )
    return list(first.categories)
