"""The images a prediction runs over and the image ids its results carry: one rule for every task that writes
COCO-style results (detection, universal segmentation), so a results file scores against its annotation file.

- An annotation file as the source (a COCO JSON with an ``images`` list: instances, panoptic, captions) whose image
  folder the caller knows (the spec names it as a split): its images in file order, with the file's ``id`` and
  ``file_name``.
- Any other image source (a folder, a glob, a list file, one image; see
  :func:`vfmkit.data.images.list_image_files`): ids 1..N in the listing order (sorted paths for a folder or a
  glob, the file's order for a list file), as the YOLO reader numbers its images. Ids are assigned before any image
  is read, so an unreadable image keeps its id unused and never shifts the others.

Beside the results, ``images.json`` lists the predicted images as COCO ``images`` entries (``id``, ``file_name``,
``width``, ``height``), so any COCO tool can load the results with it as ground-truth skeleton.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vfmkit.data.coco import read_coco_images
from vfmkit.data.images import list_image_files, load_image_rgb
from vfmkit.errors import DataError
from vfmkit.utils.atomic import atomic_write_text


@dataclass(frozen=True)
class PredictionImage:
    """One image to predict: the ``id`` its results carry, its ``path``, and the ``file_name`` written in
    ``images.json`` (the annotation file's, or the path as listed)."""

    id: int
    path: Path
    file_name: str


def prediction_images(
    source: str | Path, annotation_folders: Mapping[Path, Path] | None = None
) -> list[PredictionImage]:
    """The images of a prediction source with their result ids (see the module docstring).

    Args:
        source: an image source, or an annotation ``.json`` file.
        annotation_folders: annotation file (resolved path) -> the folder its ``file_name`` entries are relative to:
            the annotation files of the dataset the caller's spec names.

    Raises:
        DataError: a ``.json`` source whose image folder is unknown (not in ``annotation_folders``, which are listed),
            a malformed annotation file, or an image source without images.
    """
    path = Path(source).expanduser()
    if path.suffix.lower() != ".json":
        return [PredictionImage(i, file, str(file)) for i, file in enumerate(list_image_files(source), start=1)]
    folders = {Path(k).resolve(): Path(v) for k, v in (annotation_folders or {}).items()}
    folder = folders.get(path.resolve())
    if folder is None:
        known = ", ".join(str(k) for k in folders) or "none"
        raise DataError(
            f"image source {path} is an annotation file that the dataset does not name, so its image folder is "
            f"unknown; predict over a split's annotation file (the dataset's: {known}) or an image folder"
        )
    images = read_coco_images(path, folder)
    if not images:
        raise DataError(f"image source {path}: its 'images' list is empty")
    return [PredictionImage(image.id, image.path, image.file_name) for image in images]


def decoded_batches(
    images: Sequence[PredictionImage], batch_size: int, skipped: list[str]
) -> Iterator[list[tuple[PredictionImage, Image.Image]]]:
    """Batches of up to ``batch_size`` decoded images (8-bit RGB, :func:`~vfmkit.data.images.load_image_rgb`) in
    order; an unreadable image is left out and its reason appended to ``skipped``; empty batches are not yielded."""
    for start in range(0, len(images), batch_size):
        batch = []
        for image in images[start : start + batch_size]:
            try:
                batch.append((image, load_image_rgb(image.path)))
            except DataError as err:
                skipped.append(str(err))
        if batch:
            yield batch


def write_images_json(out: Path, entries: list[dict]) -> Path:
    """Write ``out/images.json``: the COCO ``images`` entries (``id``, ``file_name``, ``width``, ``height``) of the
    predicted images, atomically."""
    target = Path(out) / "images.json"
    atomic_write_text(target, json.dumps(entries, indent=1))
    return target


def image_entry(image: PredictionImage, width: int, height: int) -> dict:
    """The ``images.json`` entry of a predicted image of ``width`` x ``height`` pixels."""
    return {"id": image.id, "file_name": image.file_name, "width": int(width), "height": int(height)}
