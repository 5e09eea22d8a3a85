"""Image decoding and image-source listing.

Every image vfmkit reads goes through :func:`load_image_rgb`, which returns an 8-bit RGB ``PIL.Image`` whatever
the file holds:

- EXIF orientation is applied first (a phone photo taken in portrait comes out upright).
- Grayscale (``1``, ``L``) is replicated to three channels; palette (``P``) images are expanded through the palette.
- Transparency (``RGBA``, ``LA``, ``PA``, palette images with a transparent index) is composited onto a solid
  background, white by default (``background="black"`` for black); the colour under fully transparent pixels is
  therefore never seen by a model.
- 16-bit images (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) are scaled from the full 16-bit range:
  ``round(value / 257)`` so 65535 -> 255. 32-bit integer images (``I``) hold 8-bit data when their maximum is
  <= 255 (kept as is), 16-bit data when it is <= 65535 (divided by 257), and anything larger is scaled linearly by
  its own maximum. Float images (``F``) in [0, 1] are multiplied by 255; other float ranges are clipped to
  [0, 255].
- CMYK, YCbCr, LAB and HSV are converted by Pillow (CMYK without an ICC transform).

:func:`list_image_files` turns an image *source* (a folder, a glob pattern, a text file of paths, or one image
file) into a sorted list of paths. Folders are walked by :func:`iter_files`, the one folder walker of vfmkit: it
follows symlinked sub-folders (each real folder once, so a symlink cycle ends) and skips hidden entries;
:func:`list_subfolders` lists class or split folders with the same rules. Every reader of a data folder uses them
(a test bans other ways of walking data folders). Whether a file decodes is decided by the one decoding preflight,
:mod:`vfmkit.data.preflight`.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vfmkit.errors import DataError, UnreadableFileError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
"""Lower-case file suffixes treated as images when scanning folders and globs."""

_BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_EXIF_ORIENTATION = 0x0112


def load_image_rgb(path: str | Path, background: str = "white") -> Image.Image:
    """Read an image file as 8-bit RGB (see the module docstring for how each mode is converted).

    Args:
        path: the image file.
        background: ``"white"`` or ``"black"``, the colour transparent pixels are composited onto.

    Returns:
        A fully decoded ``PIL.Image`` in mode ``RGB`` (H x W x 3 uint8), orientation applied.

    Raises:
        DataError: the file is missing, not an image, truncated or otherwise undecodable; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableFileError(f"cannot read image {path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image, background=background)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as exc:
        raise UnreadableFileError(f"cannot read image {path}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def to_rgb(image: Image.Image, background: str = "white") -> Image.Image:
    """Convert a decoded PIL image of any mode to 8-bit RGB (see the module docstring).

    Args:
        image: a loaded PIL image.
        background: ``"white"`` or ``"black"`` for compositing transparency.

    Returns:
        A new (or the same, when already RGB without EXIF rotation) ``RGB`` image.
    """
    if background not in _BACKGROUNDS:
        raise DataError(f"background must be one of {sorted(_BACKGROUNDS)}, got {background!r}")
    if image.getexif().get(_EXIF_ORIENTATION, 1) in range(2, 9):
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in {"I", "F"}:
        return Image.fromarray(_high_depth_to_uint8(image)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*_BACKGROUNDS[background], 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a single-channel 16-bit, 32-bit integer or float image to uint8 (H, W)."""
    values = np.asarray(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        scaled = values.astype(np.float64) / 257.0
    elif image.mode == "F":
        values = np.nan_to_num(values.astype(np.float64))
        scaled = values * 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else values
    else:
        values = values.astype(np.float64)
        peak = float(values.max()) if values.size else 0.0
        if peak <= 255:
            scaled = values
        elif peak <= 65535:
            scaled = values / 257.0
        else:
            scaled = values * (255.0 / peak)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def is_image_file(path: Path) -> bool:
    """True for a regular file with an image suffix (see :data:`IMAGE_EXTENSIONS`)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def iter_files(root: str | Path, include_hidden: bool = False, recursive: bool = True) -> Iterator[Path]:
    """Every regular file below ``root``, recursively, following symlinked files and folders.

    Each real folder is walked once: a symlink to a folder already walked (a cycle, a link back to an ancestor, or
    a second link to the same folder) is skipped, so the walk always ends and no file is listed twice. Paths are
    yielded as they appear below ``root`` (through the link, not resolved), so ``path.relative_to(root)`` works;
    folders are walked depth first in sorted name order and files come sorted within their folder. Broken links
    and other non-regular entries are skipped; unreadable sub-folders are logged and skipped.

    Args:
        root: the folder to walk.
        include_hidden: also walk hidden folders and yield hidden files (names starting with ``.``).
        recursive: False lists only the files directly in ``root``.

    Yields:
        The file paths, each real folder's files once.
    """
    root = Path(root)
    visited = set()
    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=_log_unreadable_folder):
        folder_id = _folder_id(folder)
        if folder_id is None or folder_id in visited:
            subfolders[:] = []
            continue
        visited.add(folder_id)
        subfolders[:] = sorted(n for n in subfolders if recursive and (include_hidden or not n.startswith(".")))
        for name in sorted(names):
            path = Path(folder, name)
            if (include_hidden or not name.startswith(".")) and path.is_file():
                yield path


def list_subfolders(root: str | Path, include_hidden: bool = False) -> list[Path]:
    """The folders directly in ``root`` (class folders, split folders), sorted by name, with the walker's rules:
    symlinked folders count, hidden ones (``.ipynb_checkpoints``) are skipped; an unreadable ``root`` gives [].

    Args:
        root: the folder.
        include_hidden: also list hidden folders.
    """
    root = Path(root)
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as error:
        if root.exists():
            _log_unreadable_folder(error)
        return []
    return [
        Path(entry.path)
        for entry in entries
        if entry.is_dir(follow_symlinks=True) and (include_hidden or not entry.name.startswith("."))
    ]


def _folder_id(folder: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(folder)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _log_unreadable_folder(error: OSError) -> None:
    logger.warning("skipped folder %s: %s", error.filename, error.strerror or error)


def list_image_files(source: str | Path) -> list[Path]:
    """List the images of an image source.

    Args:
        source: one of
            - a folder: every image file below it, recursively (hidden files and folders skipped, symlinked
              sub-folders followed once; see :func:`iter_files`), sorted by path;
            - a glob pattern (``"photos/*.jpg"``, ``"data/**/*.png"``; ``**`` recurses): matching image files, sorted,
              each real file once (a ``**`` pattern follows symlinked folders, also in cycles);
            - a text file of paths, one per line, in the file's order; relative paths are relative to the text
              file's folder; blank lines and lines starting with ``#`` are ignored. Listed files are not checked
              here: a missing one fails when it is read, so it is reported rather than dropped;
            - one image file.

    Returns:
        The image paths.

    Raises:
        DataError: the source does not exist, or holds no images.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in iter_files(path) if p.suffix.lower() in IMAGE_EXTENSIONS)
    elif path.is_file():
        files = [path] if path.suffix.lower() in IMAGE_EXTENSIONS else _read_list_file(path)
    elif glob.has_magic(text):
        files = [p for p in glob_files(str(path)) if is_image_file(p)]
    else:
        raise DataError(
            f"image source {text!r} does not exist (expected a folder, a glob pattern or a text file of image paths)"
        )
    if not files:
        suffixes = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"no images found in image source {text!r} (looked for files ending in {suffixes})")
    return files


def glob_files(pattern: str) -> list[Path]:
    """The regular files matching a glob pattern (``**`` recurses and follows symlinked folders), sorted, each real
    file once under its shortest path."""
    return _unique_files([Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True)])


def _unique_files(files: list[Path]) -> list[Path]:
    """``files`` without the repeats a ``**`` glob finds through symlinked folders: each real file once, under its
    shortest path; sorted."""
    shortest: dict[str, Path] = {}
    for file in sorted((f for f in files if f.is_file()), key=lambda f: (len(f.parts), f)):
        shortest.setdefault(os.path.realpath(file), file)
    return sorted(shortest.values())


def _read_list_file(list_file: Path) -> list[Path]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read image list {list_file}: {_reason(exc)} (expected a UTF-8 text file)") from exc
    files = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        file = Path(entry).expanduser()
        files.append(file if file.is_absolute() else list_file.parent / file)
    return files


def index_by_stem(folder: Path, suffix: str = "") -> dict[str, Path]:
    """``relative/folder/<stem minus suffix>`` -> file, for every image file below ``folder`` (hidden skipped,
    symlinked folders followed once: see :func:`iter_files`); pairs images with masks, A with B images ...

    Raises:
        DataError: two files with the same key (e.g. ``a.png`` and ``a.jpg``), naming both.
    """
    index: dict[str, Path] = {}
    for path in iter_files(folder):
        if not is_image_file(path):
            continue
        relative = path.relative_to(folder)
        stem = path.stem
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        key = (relative.parent / stem).as_posix()
        if key in index:
            raise DataError(f"{index[key]} and {path} have the same stem {key!r}; keep one file per stem")
        index[key] = path
    return index


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image file as :func:`~vfmkit.data.images.load_image_rgb` returns it (EXIF rotation applied),
    read from the header only.

    Raises:
        UnreadableFileError: a missing or unreadable file, naming it.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableFileError(f"cannot read image {path}: {_reason(exc)}") from exc
    return (height, width) if rotated else (width, height)
