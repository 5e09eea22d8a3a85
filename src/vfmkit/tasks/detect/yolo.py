"""YOLO txt detection folders (Ultralytics layout), read into the same dataclasses as COCO JSON.

Layout: ``<root>/images/<split>/**/<name>.<ext>`` and ``<root>/labels/<split>/**/<name>.txt``, one object per line:
``class cx cy w h`` normalised to [0, 1] (a polygon line ``class x1 y1 x2 y2 ...`` gives its bounding box). An image
without a label file, or with an empty one, is a negative. Class ids are the index in the class names (the spec's
``dataset.names``, else ``names`` of ``<root>/data.yaml`` as Ultralytics writes it: a list, or a mapping id -> name)
and are kept as the category ids written back in predictions. Image ids are 1..N in sorted path order.

Folders are walked by :func:`vfmkit.data.images.iter_files` (symlinked sub-folders followed once, hidden folders
such as ``.ipynb_checkpoints`` skipped), and every image is decoded once by the shared preflight
(:func:`vfmkit.data.preflight.check_samples`): an unreadable image is left out, listed and recorded, never fatal.
Label files are read as UTF-8 with or without a byte-order mark.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from vfmkit.data.coco import BOX_SLACK, CocoAnnotation, CocoCategory, CocoDataset, CocoImage
from vfmkit.data.images import image_size, is_image_file, iter_files
from vfmkit.data.preflight import check_samples, decoded_size
from vfmkit.errors import DataError
from vfmkit.utils.strict_yaml import load_strict


def yolo_names(root: str | Path, names: Sequence[str] | None) -> list[str]:
    """The class names of a YOLO folder: ``names`` when given, else those of ``<root>/data.yaml``.

    Raises:
        DataError: neither is given, ``data.yaml`` is unreadable or its ``names`` malformed, or both are given and
            disagree (naming both).
    """
    data_yaml = Path(root) / "data.yaml"
    from_file = _read_data_yaml(data_yaml) if data_yaml.is_file() else None
    if names:
        if from_file is not None and list(names) != from_file:
            raise DataError(
                f"dataset.names {list(names)} differs from the names in {data_yaml} {from_file}; keep one of them"
            )
        return list(names)
    if from_file is None:
        raise DataError(f"dataset.names is required for format 'yolo' (or a data.yaml with 'names' in {root})")
    return from_file


def _read_data_yaml(path: Path) -> list[str] | None:
    try:
        data = load_strict(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError(f"cannot read {path}: {' '.join(str(err).split())}") from None
    names = data.get("names") if isinstance(data, dict) else None
    if names is None:
        return None
    if isinstance(names, dict):
        ids = sorted(names)
        if ids != list(range(len(ids))):
            raise DataError(f"{path}: 'names' ids must be 0..{len(ids) - 1}, got {ids}")
        names = [names[i] for i in ids]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{path}: 'names' must be a non-empty list of class names (or a mapping id -> name)")
    return names


def read_yolo_split(
    root: str | Path,
    split: str,
    names: list[str],
    min_side: int = 1,
    decode: bool = True,
    split_name: str | None = None,
    log: Callable[[str], None] | None = print,
) -> CocoDataset | None:
    """Read one split of a YOLO folder, decoding every image once.

    Args:
        root: the dataset folder (with ``images/`` and ``labels/``).
        split: sub-folder name (``train``, ``val`` ...).
        names: class names; line class ids index this list.
        min_side: images with a shorter side are left out as too small (the training transforms' minimum).
        decode: decode every image fully (False: read the sizes from the headers, for a quick look).
        split_name: the split's name in records and messages (default ``split``).
        log: where the left-out images are printed.

    Returns:
        The split as a :class:`CocoDataset` (``json_file`` = the labels folder) without its unreadable images (left
        out, listed and recorded by the shared preflight), or None when ``images/<split>`` does not exist.

    Raises:
        DataError: a malformed line (file and line number), a class id outside ``names``, a box outside the image or
            with non-positive size, or a label file without an image.
    """
    root = Path(root)
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    if not image_dir.is_dir():
        return None
    paths = sorted(p for p in iter_files(image_dir) if is_image_file(p))
    inspect = (lambda path: decoded_size(path, min_side)) if decode else image_size
    checked = check_samples(paths, split_name or split, inspect, log=log)
    categories = [CocoCategory(index, index, name) for index, name in enumerate(names)]
    images, annotations = [], {}
    label_files = {(label_dir / p.relative_to(image_dir)).with_suffix(".txt") for p in paths}
    next_id = 1
    for image_id, (path, size) in enumerate(zip(paths, checked.values, strict=True), start=1):
        if size is None:  # left out by the preflight
            continue
        relative = path.relative_to(image_dir)
        image = CocoImage(image_id, relative.as_posix(), size[0], size[1], path)
        images.append(image)
        label_file = (label_dir / relative).with_suffix(".txt")
        objects = _read_label_file(label_file, image, len(names), next_id) if label_file.is_file() else []
        next_id += len(objects)
        annotations[image_id] = objects
    orphans = sorted(p for p in iter_files(label_dir) if p.suffix == ".txt" and p not in label_files)
    if orphans:
        raise DataError(f"{len(orphans)} label file(s) in {label_dir} have no image in {image_dir}, e.g. {orphans[0]}")
    return CocoDataset(label_dir, image_dir, images, categories, annotations)


def _read_label_file(label_file: Path, image: CocoImage, num_classes: int, first_id: int) -> list[CocoAnnotation]:
    try:
        lines = label_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read label file {label_file}: {err}") from None
    objects = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{label_file}:{number}"
        label, bbox = _parse_line(line, where, num_classes, image)
        objects.append(CocoAnnotation(first_id + len(objects), image.id, label, label, bbox, bbox[2] * bbox[3]))
    return objects


def _parse_line(line: str, where: str, num_classes: int, image: CocoImage) -> tuple[int, tuple[float, ...]]:
    """``class cx cy w h`` (or ``class x1 y1 ...``) -> (class, (x, y, w, h) pixels clipped to the image)."""
    fields = line.split()
    try:
        label, values = int(fields[0]), [float(v) for v in fields[1:]]
    except ValueError:
        raise DataError(f"{where}: expected 'class cx cy w h' numbers, got {line.strip()!r}") from None
    if not 0 <= label < num_classes:
        raise DataError(f"{where}: class id {label} is outside the {num_classes} names (0..{num_classes - 1})")
    if len(values) == 4:
        cx, cy, w, h = values
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    else:
        raise DataError(
            f"{where}: expected 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 ...'), got {len(fields)} fields"
        )
    if not all(math.isfinite(v) for v in values) or x1 <= x0 or y1 <= y0:
        raise DataError(f"{where}: the box must have a positive width and height, got {line.strip()!r}")
    slack_x, slack_y = BOX_SLACK / image.width, BOX_SLACK / image.height
    if x0 < -slack_x or y0 < -slack_y or x1 > 1 + slack_x or y1 > 1 + slack_y:
        raise DataError(f"{where}: box {line.strip()!r} lies outside the image (coordinates must be in [0, 1])")
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
    return label, (x0 * image.width, y0 * image.height, (x1 - x0) * image.width, (y1 - y0) * image.height)
