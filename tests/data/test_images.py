"""Image decoding of every mode, and image-source listing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vfmkit.data.images import list_image_files, load_image_rgb, to_rgb
from vfmkit.errors import DataError


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def test_rgb_passes_through(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(_pixels(load_image_rgb(tmp_path / "rgb.png")), array)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_is_replicated(tmp_path: Path, mode: str) -> None:
    gray = (
        np.array([[0, 255], [255, 0]], dtype=np.uint8) if mode == "1" else np.arange(12, dtype=np.uint8).reshape(3, 4)
    )
    Image.fromarray(gray).convert(mode).save(tmp_path / "gray.png")
    rgb = _pixels(load_image_rgb(tmp_path / "gray.png"))
    assert rgb.shape == (*gray.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], gray)


@pytest.mark.parametrize(("background", "value"), [("white", 255), ("black", 0)])
def test_rgba_is_composited(tmp_path: Path, background: str, value: int) -> None:
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 10, 10, 255)  # opaque
    rgba[0, 1] = (200, 10, 10, 0)  # transparent: the background shows
    rgba[0, 2] = (200, 0, 0, 128)  # half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    rgb = _pixels(load_image_rgb(tmp_path / "rgba.png", background=background))
    np.testing.assert_array_equal(rgb[0, 0], (200, 10, 10))
    np.testing.assert_array_equal(rgb[0, 1], (value, value, value))
    expected_red = round(200 * 128 / 255 + value * 127 / 255)
    assert abs(int(rgb[0, 2, 0]) - expected_red) <= 1
    assert abs(int(rgb[0, 2, 1]) - round(value * 127 / 255)) <= 1


def test_gray_with_alpha_is_composited(tmp_path: Path) -> None:
    la = np.array([[[90, 255], [90, 0]]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    rgb = _pixels(load_image_rgb(tmp_path / "la.png", background="black"))
    np.testing.assert_array_equal(rgb[0], [[90, 90, 90], [0, 0, 0]])


def test_palette_image_uses_its_palette(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(_pixels(load_image_rgb(tmp_path / "p.png"))[0], [[255, 0, 0], [0, 0, 255]])


def test_palette_transparency_is_composited(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "pt.png", transparency=1)
    np.testing.assert_array_equal(_pixels(load_image_rgb(tmp_path / "pt.png"))[0], [[255, 0, 0], [255, 255, 255]])


def test_sixteen_bit_png_uses_full_range(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    rgb = _pixels(load_image_rgb(tmp_path / "i16.png"))
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 4, 128, 255])


def test_big_endian_sixteen_bit(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [32896, 65535]], dtype=">u2")
    Image.frombytes("I;16B", (2, 2), values.tobytes()).save(tmp_path / "i16b.tif")
    rgb = _pixels(load_image_rgb(tmp_path / "i16b.tif"))
    np.testing.assert_array_equal(rgb[..., 1], [[0, 4], [128, 255]])


def test_thirty_two_bit_int_and_float_modes() -> None:
    eight = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32))
    sixteen = Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32))
    unit_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert (eight.mode, sixteen.mode, unit_float.mode) == ("I", "I", "F")
    np.testing.assert_array_equal(_pixels(to_rgb(eight))[0, :, 2], [0, 100, 255])
    np.testing.assert_array_equal(_pixels(to_rgb(sixteen))[0, :, 2], [0, 4, 255])
    np.testing.assert_array_equal(_pixels(to_rgb(unit_float))[0, :, 2], [0, 128, 255])


def test_cmyk(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (2, 1), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (0, 255, 255, 0))
    cmyk.save(tmp_path / "cmyk.tif")
    np.testing.assert_array_equal(_pixels(load_image_rgb(tmp_path / "cmyk.tif"))[0], [[255, 255, 255], [255, 0, 0]])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:] = (0, 0, 255)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated; display after a 90 degree clockwise turn
    image.save(tmp_path / "rotated.png", exif=exif.tobytes())
    rgb = _pixels(load_image_rgb(tmp_path / "rotated.png"))
    assert rgb.shape == (40, 20, 3)
    np.testing.assert_array_equal(rgb[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(rgb[-1, -1], (0, 0, 255))


def test_corrupt_and_truncated_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for name in ("junk.png", "cut.png", "missing.png"):
        with pytest.raises(DataError, match=name):
            load_image_rgb(tmp_path / name)


def test_unknown_background_is_refused() -> None:
    with pytest.raises(DataError, match="background"):
        to_rgb(Image.new("RGBA", (1, 1)), background="pink")


@pytest.fixture()
def image_tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for relative in ("b.png", "a.JPG", "sub/c.png", "sub/deeper/d.tif", ".hidden/e.png"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(root / relative, format="TIFF" if relative.endswith("tif") else "PNG")
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_source_is_recursive_and_sorted(image_tree: Path) -> None:
    files = list_image_files(image_tree)
    assert [p.relative_to(image_tree).as_posix() for p in files] == ["a.JPG", "b.png", "sub/c.png", "sub/deeper/d.tif"]


def test_glob_source(image_tree: Path) -> None:
    assert [p.name for p in list_image_files(f"{image_tree}/*.png")] == ["b.png"]
    assert [p.name for p in list_image_files(f"{image_tree}/**/*.png")] == ["b.png", "c.png"]


def test_list_file_source(image_tree: Path, tmp_path: Path) -> None:
    listing = image_tree / "list.txt"
    absolute = (image_tree / "b.png").resolve()
    listing.write_text(f"# comment\nsub/c.png\n\n  {absolute}  \nmissing.png\n")
    files = list_image_files(listing)
    assert files == [image_tree / "sub/c.png", absolute, image_tree / "missing.png"]


def test_single_image_source(image_tree: Path) -> None:
    assert list_image_files(image_tree / "b.png") == [image_tree / "b.png"]


def test_missing_or_empty_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        list_image_files(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        list_image_files(tmp_path / "empty")
    with pytest.raises(DataError, match="no images found"):
        list_image_files(f"{tmp_path}/*.jpg")
    (tmp_path / "blank.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="blank.txt"):
        list_image_files(tmp_path / "blank.txt")
