"""Generated detection data: coloured shapes on textured backgrounds, written as real COCO JSON (sparse category ids
1 / 3 / 7, some images without objects) or as a YOLO folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "square", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
]


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Dark noise plus faint diagonal stripes of a random period."""
    noise = rng.integers(0, 70, (size, size, 3)).astype(np.int32)
    yy, xx = np.mgrid[0:size, 0:size]
    period = int(rng.integers(6, 12))
    stripes = (((xx + yy) // period) % 2 * 25)[..., None]
    return Image.fromarray(np.clip(noise + stripes, 0, 255).astype(np.uint8))


def _place(rng: np.random.Generator, size: int, side: int, taken: list[tuple[int, int, int, int]]):
    """A box (x0, y0, x1, y1) of ``side`` that does not touch the boxes in ``taken``, or None."""
    for _ in range(50):
        x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
        box = (x0, y0, x0 + side, y0 + side)
        if all(box[2] + 2 <= t[0] or t[2] + 2 <= box[0] or box[3] + 2 <= t[1] or t[3] + 2 <= box[1] for t in taken):
            return box
    return None


def _draw(draw: ImageDraw.ImageDraw, kind: int, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if kind == 0:
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif kind == 1:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour)


def make_image(rng: np.random.Generator, size: int, count: int) -> tuple[Image.Image, list[tuple[int, tuple]]]:
    """One image with ``count`` shapes: (image, [(category index, (x0, y0, x1, y1)), ...])."""
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    objects: list[tuple[int, tuple]] = []
    for _ in range(count):
        side = int(rng.integers(size // 4, size // 2 - 2))
        box = _place(rng, size, side, [b for _, b in objects])
        if box is None:
            continue
        kind = int(rng.integers(0, 3))
        colour = tuple(int(v) for v in rng.integers(120, 256, 3))
        _draw(draw, kind, box, colour)
        objects.append((kind, box))
    return image, objects


def make_detection_dataset(
    root: Path, num_images: int = 8, size: int = 64, seed: int = 0, negatives: int = 2, max_objects: int = 2
) -> tuple[Path, Path]:
    """Images ``root/images/*.png`` and ``root/annotations.json`` (COCO, ids 1 / 3 / 7). The last ``negatives``
    images have no objects; the others 1..max_objects shapes.

    Returns:
        (image_dir, json_file).
    """
    rng = np.random.default_rng(seed)
    image_dir = Path(root) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        count = 0 if index >= num_images - negatives else int(rng.integers(1, max_objects + 1))
        image, objects = make_image(rng, size, count)
        name = f"img_{index:03d}.png"
        image.save(image_dir / name)
        image_id = 100 + index  # ids need not start at 0 or 1
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for kind, (x0, y0, x1, y1) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORIES[kind]["id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    json_file = Path(root) / "annotations.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return image_dir, json_file


def make_yolo_dataset(root: Path, splits: dict[str, int] | None = None, size: int = 64, seed: int = 0) -> Path:
    """``root/images/<split>/*.png`` + ``root/labels/<split>/*.txt`` (class cx cy w h); the first image of every split
    has no label file, the second an empty one (negatives). Classes: 0 circle, 1 square, 2 triangle."""
    rng = np.random.default_rng(seed)
    for split, count in (splits or {"train": 6, "val": 3}).items():
        (Path(root) / "images" / split).mkdir(parents=True, exist_ok=True)
        (Path(root) / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, objects = make_image(rng, size, 0 if index < 2 else 2)
            image.save(Path(root) / "images" / split / f"{index:03d}.png")
            if index == 0:
                continue
            lines = [
                f"{kind} {(x0 + x1) / 2 / size} {(y0 + y1) / 2 / size} {(x1 - x0) / size} {(y1 - y0) / size}"
                for kind, (x0, y0, x1, y1) in objects
            ]
            (Path(root) / "labels" / split / f"{index:03d}.txt").write_text("\n".join(lines))
    return Path(root)


def link_and_hide_yolo_images(root: Path, linked: tuple[str, ...], hidden: str, outside: Path, split: str = "train"):
    """Move the images (and labels) ``linked`` of a YOLO split into ``outside`` and link them back as the sub-folder
    ``sub/``; copy the image ``hidden`` into ``.ipynb_checkpoints/`` (a copy a walker must skip)."""
    images, labels = root / "images" / split, root / "labels" / split
    (outside / "img").mkdir(parents=True)
    (outside / "lab").mkdir()
    for name in linked:
        (images / f"{name}.png").rename(outside / "img" / f"{name}.png")
        (labels / f"{name}.txt").rename(outside / "lab" / f"{name}.txt")
    (images / "sub").symlink_to(outside / "img")
    (labels / "sub").symlink_to(outside / "lab")
    (images / ".ipynb_checkpoints").mkdir()
    (images / ".ipynb_checkpoints" / f"{hidden}-checkpoint.png").write_bytes((images / f"{hidden}.png").read_bytes())
