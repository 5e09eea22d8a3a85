"""COCO panoptic JSON (cocodataset/panopticapi), read through the shared
:class:`~vfmkit.data.json_reader.JsonReader` into plain dataclasses and checked.

The file holds ``images`` ({id, file_name, width, height}), ``annotations`` ({image_id, file_name of the PNG,
segments_info [{id, category_id, iscrowd, area, bbox}]}) and ``categories`` ({id, name, isthing, color}). Image ids
may be integers or strings (Cityscapes' panoptic files use strings). :func:`read_coco_panoptic` refuses, with one
line naming the file, the list, the index and the key: a missing or mistyped key, duplicate image / category /
segment ids, a category id <= 0, a segment id <= 0 (0 is VOID), an annotation whose image is not in ``images`` or
whose segment's category is not in ``categories``, two annotations of one image, and a negative ``area``.
No image or PNG is opened here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfmkit.data.json_reader import JsonReader, read_json


@dataclass(frozen=True)
class PanopticCategory:
    """A category as in the file: ``id`` (> 0), ``name``, ``isthing``, display ``color`` (RGB) or None."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class PanopticSegment:
    """One entry of ``segments_info``: PNG ``id`` (> 0), original ``category_id``, ``iscrowd``, ``area`` or None."""

    id: int
    category_id: int
    iscrowd: bool = False
    area: int | None = None


@dataclass(frozen=True)
class PanopticAnnotation:
    """One image and its annotation: ``image_id``, the image's ``file_name`` and size (None when the file does
    not give it), the PNG's ``png_name`` and the segments."""

    image_id: int | str
    file_name: str
    png_name: str
    segments: tuple[PanopticSegment, ...]
    width: int | None = None
    height: int | None = None


@dataclass
class CocoPanoptic:
    """A checked COCO panoptic file: categories in file order, annotations in file order (images without an
    annotation are not listed; ``num_images`` counts every entry of ``images``)."""

    json_file: Path
    categories: list[PanopticCategory]
    annotations: list[PanopticAnnotation]
    num_images: int


def read_coco_panoptic(json_file: str | Path, what: str = "panoptic JSON", need_images: bool = True) -> CocoPanoptic:
    """Read and check a COCO panoptic JSON (see the module docstring for what is refused).

    Args:
        json_file: the file.
        what: what it is, for messages.
        need_images: refuse a file without ``images`` (False: as panopticapi's evaluation, which reads only
            ``annotations`` and ``categories``, takes the annotations' image ids as the images).

    Raises:
        DataError: naming the file and the place.
    """
    json_file = Path(json_file)
    data = read_json(json_file, what)
    reader = _PanopticReader(json_file)
    expected = "an object with images, annotations and categories (the COCO panoptic format)"
    categories = reader.categories(reader.list_of(data, "categories", expected=expected))
    if need_images or "images" in reader.object(data, expected=expected):
        images = reader.images(reader.list_of(data, "images", expected=expected))
    else:
        images = _annotated_images(reader, reader.list_of(data, "annotations", expected=expected))
    known = {c.id for c in categories}
    annotations = reader.annotations(reader.list_of(data, "annotations", expected=expected), images, known)
    return CocoPanoptic(json_file, categories, annotations, len(images))


class _PanopticReader(JsonReader):
    def categories(self, items: list) -> list[PanopticCategory]:
        if not items:
            raise self.fail("categories", "the list is empty; at least one category is needed")
        ids: dict = {}
        names: dict = {}
        out = []
        for index, item in enumerate(items):
            where = f"categories[{index}]"
            category_id = self.get(item, where, "id", int)
            if category_id <= 0:
                raise self.fail(where, f"category id {category_id} must be > 0")
            self.unique_id(ids, category_id, where, "category id")
            name = self.get(item, where, "name", str)
            self.unique_id(names, name, where, "category name")
            isthing = self.get(item, where, "isthing", (int, bool), 1)
            out.append(PanopticCategory(category_id, name, bool(isthing), self._color(item, where)))
        return out

    def _color(self, item: dict, where: str) -> tuple[int, int, int] | None:
        color = item.get("color")
        if color is None:
            return None
        values = self.numbers(color, where, "color")
        if len(values) != 3:
            raise self.fail(where, f"key 'color' must be 3 numbers [R, G, B], got {color!r}")
        return tuple(int(v) for v in values)

    def images(self, items: list) -> dict[Any, tuple[str, int | None, int | None]]:
        images: dict = {}
        seen: dict = {}
        for index, item in enumerate(items):
            where = f"images[{index}]"
            image_id = self.get(item, where, "id", (int, str))
            self.unique_id(seen, image_id, where, "image id")
            name = self.get(item, where, "file_name", str)
            width, height = self.get(item, where, "width", int, None), self.get(item, where, "height", int, None)
            if (width is not None and width <= 0) or (height is not None and height <= 0):
                raise self.fail(where, f"width and height must be positive, got {width}x{height}")
            images[image_id] = (name, width, height)
        return images

    def annotations(self, items: list, images: dict, categories: set[int]) -> list[PanopticAnnotation]:
        out = []
        owner: dict = {}
        for index, item in enumerate(items):
            where = f"annotations[{index}]"
            image_id = self.get(item, where, "image_id", (int, str))
            png_name = self.get(item, where, "file_name", str)
            where = f"annotations[{index}] ({png_name})"
            if image_id not in images:
                raise self.fail(where, f"image_id {image_id!r} is not in images")
            self.unique_id(owner, image_id, where, "annotation of image id")
            segments = self._segments(self.get(item, where, "segments_info", list), where, categories)
            name, width, height = images[image_id]
            out.append(PanopticAnnotation(image_id, name, png_name, segments, width, height))
        return out

    def _segments(self, items: list, where: str, categories: set[int]) -> tuple[PanopticSegment, ...]:
        seen: dict = {}
        out = []
        for index, item in enumerate(items):
            place = f"{where}: segments_info[{index}]"
            segment_id = self.get(item, place, "id", int)
            if segment_id <= 0:
                raise self.fail(place, f"segment id {segment_id} must be > 0 (0 is VOID)")
            self.unique_id(seen, segment_id, place, "segment id")
            category_id = self.get(item, place, "category_id", int)
            if category_id not in categories:
                known = ", ".join(str(c) for c in sorted(categories))
                raise self.fail(place, f"category_id {category_id} is not in categories (ids {known})")
            iscrowd = self.get(item, place, "iscrowd", (int, bool), 0)
            area = self.get(item, place, "area", float, None)
            if area is not None and area < 0:
                raise self.fail(place, f"area {area:g} must not be negative")
            out.append(PanopticSegment(segment_id, category_id, bool(iscrowd), None if area is None else int(area)))
        return tuple(out)


def read_coco_panoptic_results(json_file: str | Path, categories: set[int] | None = None) -> CocoPanoptic:
    """Read predictions in panopticapi's format: ``annotations`` (``image_id``, ``file_name`` of the PNG,
    ``segments_info`` with ``id`` and ``category_id``); no ``images`` list is needed.

    Args:
        json_file: the predictions JSON.
        categories: the category ids a segment may use (None: any positive id).

    Raises:
        DataError: naming the file and the place (missing keys, wrong types, duplicate ids, unknown categories).
    """
    json_file = Path(json_file)
    data = read_json(json_file, "panoptic predictions")
    reader = _PanopticReader(json_file)
    items = reader.list_of(data, "annotations", expected="an object with annotations (panopticapi's format)")
    images = _annotated_images(reader, items)
    allowed = categories if categories is not None else _AnyPositive()
    annotations = reader.annotations(items, images, allowed)
    return CocoPanoptic(json_file, [], annotations, len(images))


def _annotated_images(reader: JsonReader, items: list) -> dict:
    """The image ids of ``annotations`` as the images of a file without an ``images`` list."""
    return {
        reader.get(item, f"annotations[{index}]", "image_id", (int, str)): ("", None, None)
        for index, item in enumerate(items)
    }


class _AnyPositive:
    """Stands for "every positive category id" where no category list is given."""

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and value > 0

    def __iter__(self):
        return iter(())
