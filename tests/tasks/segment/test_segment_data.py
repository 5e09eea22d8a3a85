"""Segmentation data: palettes (id and RGB masks), stem pairing, preflight, joint augmentation, eval sizes, pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pydantic import ValidationError

from vfmkit.data.dense_augment import collate_dense
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.errors import DataError
from vfmkit.spec.dense import DenseAugmentSpec
from vfmkit.tasks.segment.data import (
    Palette,
    SegmentationDataset,
    colorize,
    load_mask,
    load_segment_split,
    overlay,
    preflight_segmentation,
)
from vfmkit.tasks.segment.spec import SegmentDataSpec

IDS = [{"name": "background", "id": 0}, {"name": "box", "id": 7}, {"name": "disc", "id": 9}]
COLORS = [
    {"name": "background", "color": [0, 0, 0]},
    {"name": "box", "color": [255, 0, 0]},
    {"name": "disc", "color": [0, 0, 255]},
]
RGB = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 0, 255)}


def _classes(width: int, height: int, seed: int) -> np.ndarray:
    """int (H, W) class map: a box (1) and a disc (2) on background (0), a 3x3 ignored corner (255)."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    x, y = (int(v) for v in rng.integers(2, width // 3, 2))
    draw.rectangle([x, y, x + width // 4, y + height // 4], fill=1)
    draw.ellipse([width // 2, height // 2, width - 3, height - 3], fill=2)
    classes = np.asarray(canvas).astype(np.int64)
    classes[:3, :3] = 255
    return classes


def _image_of(classes: np.ndarray) -> Image.Image:
    pixels = np.zeros((*classes.shape, 3), dtype=np.uint8)
    for index, colour in RGB.items():
        pixels[classes == index] = colour
    return Image.fromarray(pixels)


def _id_mask(classes: np.ndarray) -> Image.Image:
    ids = np.select([classes == 1, classes == 2, classes == 255], [7, 9, 255], 0).astype(np.uint8)
    return Image.fromarray(ids)


def _rgb_mask(classes: np.ndarray, ignore=(255, 255, 255)) -> Image.Image:
    pixels = np.asarray(_image_of(classes)).copy()
    pixels[classes == 255] = ignore
    return Image.fromarray(pixels)


def _make(root: Path, kind: str = "ids", counts=(("train", 3), ("val", 2)), size=(48, 40), mask_suffix="") -> Path:
    for split, count in counts:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            classes = _classes(*size, seed=i)
            _image_of(classes).save(root / "images" / split / f"img{i}.jpg", quality=98)
            mask = _id_mask(classes) if kind == "ids" else _rgb_mask(classes)
            mask.save(root / "masks" / split / f"img{i}{mask_suffix}.png")
    return root


def _spec(root: Path, palette=IDS, **kwargs) -> SegmentDataSpec:
    return SegmentDataSpec(root=root, palette=palette, **kwargs)


# ------------------------------------------------------------------------------------------------ palette / masks


def test_id_masks_pair_by_stem_across_extensions_and_decode(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids", mask_suffix="_mask")
    spec = _spec(root, mask_suffix="_mask")
    split = load_segment_split(spec, "train")
    assert len(split) == 3 and split.images.dtype.kind == "U" and split.masks.dtype.kind == "U"
    assert [p.name for p in map(split.image_path, range(3))] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert split.mask_path(1).name == "img1_mask.png"
    mask = load_mask(split.mask_path(1), Palette.from_spec(spec))
    assert mask.dtype == np.int64 and mask.shape == (40, 48)
    np.testing.assert_array_equal(mask, _classes(48, 40, seed=1))
    assert load_segment_split(spec, "test") is None


def test_rgb_palette_masks_with_ignore_color_and_p_mode(tmp_path: Path) -> None:
    classes = _classes(30, 20, seed=3)
    palette = Palette.from_spec(_spec(tmp_path, COLORS, ignore_color=(255, 255, 255)))
    np.testing.assert_array_equal(palette.encode(_rgb_mask(classes)), classes)
    np.testing.assert_array_equal(palette.encode(_rgb_mask(classes).convert("RGBA")), classes)
    as_p = _rgb_mask(classes).quantize(colors=8, method=Image.Quantize.MAXCOVERAGE)
    np.testing.assert_array_equal(palette.encode(as_p), classes)
    with pytest.raises(DataError, match="single-channel id mask but dataset.palette has no 'id'"):
        palette.encode(_id_mask(classes), "m.png")


def test_gray_rgb_mask_reads_as_ids_and_colour_needs_colours(tmp_path: Path) -> None:
    classes = _classes(30, 20, seed=2)
    palette = Palette.from_spec(_spec(tmp_path))
    np.testing.assert_array_equal(palette.encode(_id_mask(classes).convert("RGB")), classes)
    with pytest.raises(DataError, match="RGB colour image but dataset.palette has no 'color'"):
        palette.encode(_rgb_mask(classes), "colour.png")


def test_unknown_mask_values_name_file_and_value(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids")
    bad = np.asarray(Image.open(root / "masks" / "train" / "img1.png")).copy()
    bad[10:12, 10:13] = 42
    Image.fromarray(bad).save(root / "masks" / "train" / "img1.png")
    with pytest.raises(DataError, match=r"img1\.png: unknown id value\(s\) 42 \(6 px\)"):
        preflight_segmentation(_spec(root), ("train",))
    palette = Palette.from_spec(_spec(tmp_path, COLORS))
    colour = _rgb_mask(_classes(30, 20, 0), ignore=(0, 0, 0))
    colour.putpixel((5, 5), (1, 2, 3))
    with pytest.raises(DataError, match=r"c\.png: unknown colour value\(s\) \[1, 2, 3\] \(1 px\)"):
        palette.encode(colour, "c.png")


def test_stem_misalignment_lists_missing_partners(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids")
    (root / "masks" / "train" / "img2.png").rename(root / "masks" / "train" / "other.png")
    with pytest.raises(DataError) as info:
        load_segment_split(_spec(root), "train")
    message = str(info.value)
    assert "1 image(s)" in message and "without a mask: img2" in message
    assert "1 mask(s)" in message and "without an image: other" in message


def test_duplicate_stems_and_missing_folders_are_errors(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids")
    _image_of(_classes(48, 40, 0)).save(root / "images" / "train" / "img0.png")
    with pytest.raises(DataError, match="img0.jpg and .*img0.png have the same stem"):
        load_segment_split(_spec(root), "train")
    with pytest.raises(DataError, match="training image folder .* does not exist"):
        load_segment_split(_spec(tmp_path / "nowhere"), "train")


def test_preflight_size_mismatch_names_the_file(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids")
    _id_mask(_classes(40, 40, 0)).save(root / "masks" / "val" / "img1.png")
    with pytest.raises(DataError, match=r"mask .*val/img1\.png is 40x40 but image .*img1\.jpg is 48x40"):
        preflight_segmentation(_spec(root))
    split = load_segment_split(_spec(root), "val")
    with pytest.raises(DataError, match="a mask must have its image's size"):
        SegmentationDataset(split, Palette.from_spec(_spec(root)), size=32)[1]


def test_preflight_counts_pixels_per_class(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids")
    report = preflight_segmentation(_spec(root, palette=[*IDS, {"name": "unused", "id": 3}]), ("train", "val", "test"))
    expected = np.zeros(4, dtype=np.int64)
    for i in range(3):
        classes = _classes(48, 40, i)
        expected += np.bincount(classes[classes != 255], minlength=4)
    np.testing.assert_array_equal(report.pixel_counts["train"], expected)
    assert report.ignored_pixels["train"] == 27 and report.pixel_counts["train"].dtype == np.int64
    text = report.format()
    assert "box" in text and str(expected[1]) in text and "(ignored)" in text
    assert "test" not in report.splits and not any("test" in w for w in report.warnings)  # optional: absent, unreported
    assert any("no train pixels: unused" in w for w in report.warnings)


def test_spec_validates_palette() -> None:
    with pytest.raises(ValidationError, match="give an 'id' for every class"):
        SegmentDataSpec(root=".", palette=[{"name": "a", "id": 0}, {"name": "b", "color": [1, 2, 3]}])
    with pytest.raises(ValidationError, match="equals ignore_index"):
        SegmentDataSpec(root=".", palette=[{"name": "a", "id": 0}, {"name": "b", "id": 255}])
    with pytest.raises(ValidationError, match="duplicate name"):
        SegmentDataSpec(root=".", palette=[{"name": "a", "id": 0}, {"name": "a", "id": 1}])
    with pytest.raises(ValidationError, match="needs an 'id'"):
        SegmentDataSpec(root=".", palette=[{"name": "a"}, {"name": "b"}])
    spec = SegmentDataSpec(root=".", palette=IDS[:2], ignore_index=254, augment={"scale_range": [1, 2]})
    assert spec.augment.scale_range == (1.0, 2.0)


# ------------------------------------------------------------------------------------------------------- dataset


def _agreement(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of non-ignored pixels whose colour class (red box / blue disc / black) matches the mask."""
    red, blue = image[0] > 0.5, image[2] > 0.5
    from_image = torch.where(red, 1, torch.where(blue, 2, 0))
    valid = mask != 255
    return float((from_image[valid] == mask[valid]).float().mean())


def test_joint_augmentation_keeps_image_and_mask_aligned(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids", counts=(("train", 2),), size=(64, 48))
    spec = _spec(root, augment={"scale_range": [0.6, 1.6], "hflip": 0.5, "vflip": 0.5})
    dataset = SegmentationDataset(load_segment_split(spec, "train"), Palette.from_spec(spec), 32, True, spec.augment)
    centres = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        image, mask, index = dataset[0]
        assert image.shape == (3, 32, 32) and mask.shape == (32, 32) and mask.dtype == torch.int64 and index == 0
        assert _agreement(image, mask) > 0.95
        ys, xs = torch.nonzero(mask == 1, as_tuple=True)
        centres.add((round(float(ys.float().mean()), 1), round(float(xs.float().mean()), 1)) if len(ys) else None)
    assert len(centres) >= 4  # the geometry really changes from epoch to epoch


def test_crop_pads_mask_with_ignore_index(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids", counts=(("train", 1),), size=(32, 24))
    augment = DenseAugmentSpec(scale_range=(0.5, 0.5), scale_reference="image", hflip=0.0, crop_size=40)
    spec = _spec(root)
    dataset = SegmentationDataset(load_segment_split(spec, "train"), Palette.from_spec(spec), 16, True, augment)
    image, mask, _ = dataset[0]
    assert image.shape == (3, 40, 40) and mask.shape == (40, 40)
    padded = mask == 255
    assert int(padded.sum()) >= 40 * 40 - 16 * 12 and float(image[:, padded].abs().max()) < 0.02  # JPEG noise


def test_training_items_are_a_function_of_seed_epoch_index(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids", counts=(("train", 3),))
    spec = _spec(root)
    split, palette = load_segment_split(spec, "train"), Palette.from_spec(spec)
    first = SegmentationDataset(split, palette, 24, True, spec.augment, seed=5)
    second = SegmentationDataset(split, palette, 24, True, spec.augment, seed=5)
    sampler = EpochSeededSampler(len(split), seed=5, dataset=second)
    sampler.set_epoch(2)
    first.set_epoch(2)
    for index in (2, 0):
        a, b = first[index], second[index]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    first.set_epoch(3)
    assert not torch.equal(first[0][0], second[0][0])


def test_eval_sizes_and_collate(tmp_path: Path) -> None:
    root = _make(tmp_path, "ids", counts=(("val", 2),))
    _image_of(_classes(40, 30, 9)).save(root / "images" / "val" / "img9.png")
    _id_mask(_classes(40, 30, 9)).save(root / "masks" / "val" / "img9.png")
    spec = _spec(root)
    split, palette = load_segment_split(spec, "val"), Palette.from_spec(spec)
    image, mask, _ = SegmentationDataset(split, palette, 32)[2]
    assert image.shape == (3, 32, 32) and mask.shape == (30, 40)
    np.testing.assert_array_equal(mask.numpy(), _classes(40, 30, 9))
    _, resized, _ = SegmentationDataset(split, palette, (16, 24), mask_size="resized")[2]
    assert resized.shape == (16, 24) and set(resized.unique().tolist()) <= {0, 1, 2, 255}
    kept = SegmentationDataset(split, palette, None)
    images, masks, indices = collate_dense([kept[0], kept[2]])
    assert isinstance(images, list) and images[1].shape == (3, 30, 40) and isinstance(masks, list)
    assert indices.tolist() == [0, 2]
    images, masks, _ = collate_dense([SegmentationDataset(split, palette, 32)[i] for i in (0, 1)])
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 40, 48)


# ------------------------------------------------------------------------------------------------------ pictures


def test_colorize_and_overlay() -> None:
    palette = Palette(["a", "b"], colors=[(10, 20, 30), (200, 100, 0)])
    mask = np.array([[0, 1], [255, 1]])
    np.testing.assert_array_equal(
        np.asarray(colorize(mask, palette)), [[[10, 20, 30], [200, 100, 0]], [[0, 0, 0], [200, 100, 0]]]
    )
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    blended = np.asarray(overlay(image, mask, palette, alpha=0.5)).astype(int)
    np.testing.assert_array_equal(blended[0, 1], [150, 100, 50])
    np.testing.assert_array_equal(blended[1, 0], [100, 100, 100])  # ignored pixels keep the image
    assert np.array_equal(np.asarray(overlay(Image.fromarray(image), mask, palette, 0.0)), image)
    assert Palette(["x", "y", "z"], ids=[0, 1, 2]).colors.shape == (3, 3)
