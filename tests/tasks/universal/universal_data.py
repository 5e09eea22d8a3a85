"""Generated COCO-panoptic data for the universal-segmentation tests (deterministic, 64 px by default).

Every image has two stuff regions split by a wavy horizon (``sky`` above, ``ground`` below, textured) and one to
three non-overlapping things (``disc``: red-ish circles, ``block``: yellow-ish squares). Category ids are sparse
(3, 7, 12, 25) so the contiguous <-> original mapping is exercised; segment ids are > 255 so the PNG's green channel
is used. With ``special=True`` (default) image 0 holds a crowd region (three small discs close together annotated
as one ``iscrowd`` disc segment) and image 1 a VOID region (a grey noise rectangle, id 0 in the PNG).

Layout (COCO panoptic): ``root/images/<split>/NNN.png``, ``root/annotations/panoptic_<split>.json`` and its PNGs in
``root/annotations/panoptic_<split>/NNN.png``. :func:`make_instances_dataset` and :func:`make_semantic_dataset` add
the same images as COCO instances and as semantic masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vfmkit.metrics.panoptic import id2rgb, rgb2id

CATEGORIES = [
    {"id": 3, "name": "disc", "isthing": 1, "color": [220, 50, 50], "supercategory": "shape"},
    {"id": 7, "name": "block", "isthing": 1, "color": [230, 210, 40], "supercategory": "shape"},
    {"id": 12, "name": "sky", "isthing": 0, "color": [70, 120, 230], "supercategory": "background"},
    {"id": 25, "name": "ground", "isthing": 0, "color": [90, 160, 60], "supercategory": "background"},
]
DISC, BLOCK, SKY, GROUND = 3, 7, 12, 25
THING_COLOURS = {DISC: (225, 45, 45), BLOCK: (235, 215, 35)}


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image float (S, S, 3), category map int (S, S)) of sky over ground."""
    yy, xx = np.mgrid[0:size, 0:size]
    horizon = rng.integers(size * 3 // 8, size * 5 // 8) + 3 * np.sin(xx / rng.uniform(4, 8) + rng.uniform(0, 6))
    sky = yy < horizon
    image = np.where(
        sky[..., None],
        np.array([70, 120, 220]) + 20 * np.sin(yy[..., None] / 3.0),
        np.array([95, 150, 60]) + 25 * np.sin((xx + yy)[..., None] / 2.0),
    )
    return image + rng.normal(0, 8, (size, size, 3)), np.where(sky, SKY, GROUND)


def _place(rng: np.random.Generator, size: int, taken: np.ndarray, radius: int) -> tuple[int, int] | None:
    for _ in range(50):
        cy, cx = (int(v) for v in rng.integers(radius + 1, size - radius - 1, 2))
        if not taken[cy - radius - 2 : cy + radius + 3, cx - radius - 2 : cx + radius + 3].any():
            return cy, cx
    return None


def _shape(kind: int, size: int, cy: int, cx: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == DISC:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius
    return (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)


def make_sample(rng: np.random.Generator, size: int, crowd: bool = False, void: bool = False):
    """One image: (uint8 (S, S, 3) pixels, int64 (S, S) segment ids, segments_info list)."""
    image, stuff = _background(rng, size)
    ids = np.zeros((size, size), dtype=np.int64)
    segments = []
    for k, category in enumerate((SKY, GROUND)):
        segment_id = category * 1000 + k + 1
        ids[stuff == category] = segment_id
        segments.append({"id": segment_id, "category_id": category, "iscrowd": 0})
    taken = np.zeros((size, size), dtype=bool)
    for k in range(int(rng.integers(1, 4))):
        kind = DISC if rng.random() < 0.5 else BLOCK
        radius = int(rng.integers(size // 9, size // 6))
        spot = _place(rng, size, taken, radius)
        if spot is None:
            continue
        mask = _shape(kind, size, *spot, radius)
        taken |= mask
        image[mask] = np.array(THING_COLOURS[kind]) + rng.normal(0, 8, (int(mask.sum()), 3))
        segment_id = kind * 1000 + 100 + k
        ids[mask] = segment_id
        segments.append({"id": segment_id, "category_id": kind, "iscrowd": 0})
    if crowd:
        group = np.zeros((size, size), dtype=bool)
        cy, cx = size - 8, 8
        for dy, dx in ((0, 0), (0, 5), (-4, 3)):
            group |= _shape(DISC, size, cy + dy, cx + dx, 2)
        group &= ~taken
        image[group] = THING_COLOURS[DISC]
        ids[group] = DISC * 1000 + 900
        segments.append({"id": DISC * 1000 + 900, "category_id": DISC, "iscrowd": 1})
    if void:
        box = np.zeros((size, size), dtype=bool)
        box[2:8, size - 14 : size - 2] = True
        box &= ~taken
        image[box] = 128 + rng.normal(0, 30, (int(box.sum()), 3))
        ids[box] = 0
    for segment in segments:
        mask = ids == segment["id"]
        ys, xs = np.nonzero(mask)
        segment["area"] = int(mask.sum())
        segment["bbox"] = (
            [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)] if len(xs) else [0] * 4
        )
    segments = [s for s in segments if s["area"] > 0]
    return np.clip(image, 0, 255).astype(np.uint8), ids, segments


def make_panoptic_dataset(
    root: Path, per_split: dict[str, int] | None = None, size: int = 64, seed: int = 0, special: bool = True
) -> Path:
    """Write a COCO-panoptic dataset (see the module docstring); returns ``root``."""
    per_split = per_split or {"train": 8, "val": 8}
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in per_split.items():
        images_dir, png_dir = root / "images" / split, root / "annotations" / f"panoptic_{split}"
        images_dir.mkdir(parents=True, exist_ok=True)
        png_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            pixels, ids, segments = make_sample(rng, size, crowd=special and i == 0, void=special and i == 1)
            name = f"{i:03d}.png"
            Image.fromarray(pixels).save(images_dir / name)
            Image.fromarray(id2rgb(ids)).save(png_dir / name)
            images.append({"id": 100 + i, "file_name": name, "width": size, "height": size})
            annotations.append({"image_id": 100 + i, "file_name": name, "segments_info": segments})
        data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
        (root / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(data))
    return root


def split_paths(root: Path, split: str) -> tuple[Path, Path, Path]:
    """(images folder, panoptic JSON, PNG folder) of a split written by :func:`make_panoptic_dataset`."""
    root = Path(root)
    return (
        root / "images" / split,
        root / "annotations" / f"panoptic_{split}.json",
        root / "annotations" / f"panoptic_{split}",
    )


def repeat_split(root: Path, split: str, times: int) -> Path:
    """A panoptic JSON listing every image of ``split`` ``times`` times (new image ids, same files): one training
    epoch then makes ``times`` passes over the images. Returns the new JSON (its PNG folder is the split's)."""
    _, json_file, png_dir = split_paths(root, split)
    data = json.loads(json_file.read_text())
    images, annotations = [], []
    for r in range(times):
        for image, ann in zip(data["images"], data["annotations"], strict=True):
            images.append({**image, "id": image["id"] + 10_000 * r})
            annotations.append({**ann, "image_id": image["id"] + 10_000 * r})
    target = json_file.with_name(f"panoptic_{split}_x{times}.json")
    target.write_text(json.dumps({**data, "images": images, "annotations": annotations}))
    return target


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bool (H, W) mask: column-major run lengths starting with a run of zeros."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def make_instances_dataset(root: Path, per_split: dict[str, int], size: int = 64, seed: int = 0) -> Path:
    """The same images as :func:`make_panoptic_dataset` as a COCO instances file per split
    (``root/annotations/instances_<split>.json``, images in ``root/images/<split>``): things only (categories 3 and
    7); blocks as polygons, discs as compressed RLE, the crowd region as an uncompressed RLE."""
    from vfmkit.data.coco_masks import mask_to_rle

    make_panoptic_dataset(root, per_split, size, seed)
    for split in per_split:
        _, json_file, png_dir = split_paths(root, split)
        data = json.loads(json_file.read_text())
        annotations = []
        for ann in data["annotations"]:
            ids = rgb2id(np.asarray(Image.open(png_dir / ann["file_name"]).convert("RGB")))
            for segment in ann["segments_info"]:
                if segment["category_id"] not in THING_COLOURS:
                    continue
                mask = ids == segment["id"]
                x, y, w, h = segment["bbox"]
                if segment["iscrowd"]:
                    shape = uncompressed_rle(mask)
                elif segment["category_id"] == BLOCK:
                    shape = [[x, y, x + w, y, x + w, y + h, x, y + h]]
                else:
                    shape = mask_to_rle(mask)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": ann["image_id"],
                        "category_id": segment["category_id"],
                        "bbox": [x, y, w, h],
                        "area": segment["area"],
                        "iscrowd": segment["iscrowd"],
                        "segmentation": shape,
                    }
                )
        things = [{k: c[k] for k in ("id", "name", "supercategory")} for c in CATEGORIES if c["isthing"]]
        instances = {"images": data["images"], "annotations": annotations, "categories": things}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(instances))
    return root


SEMANTIC_PALETTE = "[{name: disc, id: 3}, {name: block, id: 7}, {name: sky, id: 12}, {name: ground, id: 25}]"
"""The palette of :func:`make_semantic_dataset`'s masks (ids = the panoptic category ids; 255 = ignored)."""


def make_semantic_dataset(root: Path, per_split: dict[str, int], size: int = 64, seed: int = 0) -> Path:
    """The same images as :func:`make_panoptic_dataset` in the segment task's layout: ``root/images/<split>/`` and
    ``root/masks/<split>/`` (pixel = category id of :data:`SEMANTIC_PALETTE`, 255 on VOID)."""
    make_panoptic_dataset(root, per_split, size, seed)
    for split in per_split:
        _, json_file, png_dir = split_paths(root, split)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for ann in json.loads(json_file.read_text())["annotations"]:
            ids = rgb2id(np.asarray(Image.open(png_dir / ann["file_name"]).convert("RGB")))
            mask = np.full(ids.shape, 255, dtype=np.uint8)
            for segment in ann["segments_info"]:
                mask[ids == segment["id"]] = segment["category_id"]
            Image.fromarray(mask, mode="L").save(root / "masks" / split / ann["file_name"])
    return root
