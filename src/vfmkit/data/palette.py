"""Segmentation palettes: mask files -> class-index arrays, and class-index arrays -> colour pictures.

A :class:`Palette` lists K classes in index order with their mask ``ids`` (single-channel id masks) and/or mask
``colors`` (RGB masks). :meth:`Palette.encode` reads a mask image of any of these kinds:

- ``L``, ``I``, ``I;16``, ``1``: pixel values are ids (needs palette ids);
- ``P``: the raw palette indices are ids when the palette has ids (VOC style), else the image is expanded through
  its own colour table and matched against the palette colours;
- ``RGB`` / ``RGBA`` (alpha dropped): matched against the palette colours; without palette colours, an RGB mask
  whose three channels are equal everywhere is read as an id mask (grayscale saved as RGB).

The result is int64 (H, W) with values 0..K-1 and ``ignore_index`` for ignored pixels (id == ``ignore_index`` in id
masks, colour == ``ignore_color`` in RGB masks). Any other value is a :class:`~vfmkit.errors.DataError` naming the
file and the values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vfmkit.errors import DataError

_ID_MODES = {"L", "I", "I;16", "I;16L", "I;16B", "I;16N", "1"}
_COLOR_MODES = {"RGB", "RGBA"}


def default_colors(num_classes: int) -> np.ndarray:
    """Distinct display colours (the PASCAL VOC bit-interleaving scheme): uint8 (K, 3)."""
    colors = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colors[index] = (r, g, b)
    return colors


class Palette:
    """Class names, mask ids and colours of a segmentation dataset.

    Args:
        names: K class names; class index = position.
        ids: K distinct mask ids (values of id masks), or ``None`` when masks are RGB.
        colors: K distinct ``(r, g, b)`` mask colours, or ``None`` when masks hold ids. ``match_colors`` tells
            whether they are mask colours; they are always the display colours of :func:`colorize`.
        ignore_index: the target value of ignored pixels (not in 0..K-1), also the ignored id of id masks.
        ignore_color: the ignored colour of RGB masks, or ``None``.

    Attributes:
        names: list of K names.
        ids: int64 (K,) or ``None``.
        colors: uint8 (K, 3) display colours (the given ones, else :func:`default_colors`).
        match_colors: whether RGB masks are matched against ``colors``.
    """

    def __init__(
        self,
        names: Sequence[str],
        ids: Sequence[int] | None = None,
        colors: Sequence[Sequence[int]] | None = None,
        ignore_index: int = 255,
        ignore_color: Sequence[int] | None = None,
    ) -> None:
        self.names = [str(name) for name in names]
        count = len(self.names)
        if ids is None and colors is None:
            raise ValueError("a palette needs ids (id masks) or colors (RGB masks)")
        self.ids = None if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
        if self.ids is not None and (len(self.ids) != count or len(set(self.ids.tolist())) != count):
            raise ValueError(f"palette needs {count} distinct ids, got {None if ids is None else list(ids)}")
        self.match_colors = colors is not None
        self.colors = default_colors(count) if colors is None else np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
        if len(self.colors) != count or len({tuple(c) for c in self.colors.tolist()}) != count:
            raise ValueError(f"palette needs {count} distinct colors, got {self.colors.tolist()}")
        if 0 <= ignore_index < count:
            raise ValueError(f"ignore_index {ignore_index} is a class index (0..{count - 1})")
        if self.ids is not None and ignore_index in self.ids.tolist():
            raise ValueError(f"ignore_index {ignore_index} is also a palette id")
        self.ignore_index = int(ignore_index)
        self.ignore_color = None if ignore_color is None else tuple(int(c) for c in ignore_color)

    @classmethod
    def from_spec(cls, spec) -> Palette:
        """The palette of a dataset section (``palette`` [{name, id | color}], ``ignore_index``, ``ignore_color``)."""
        entries = spec.palette
        ids = [e.id for e in entries] if entries[0].id is not None else None
        colors = [e.color for e in entries] if entries[0].color is not None else None
        return cls([e.name for e in entries], ids, colors, spec.ignore_index, spec.ignore_color)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_classes(self) -> int:
        """K."""
        return len(self.names)

    def encode(self, mask: Image.Image, source: str | Path = "<mask>") -> np.ndarray:
        """A mask image -> int64 (H, W) class indices 0..K-1, ``ignore_index`` where ignored.

        Args:
            mask: a PIL mask image (see the module docstring for the accepted modes).
            source: the file name used in error messages.

        Raises:
            DataError: a mode the palette cannot read, or values that are neither a class nor ignored (named with
                the file).
        """
        mode = mask.mode
        if mode == "P" and self.ids is None:
            mask, mode = mask.convert("RGB"), "RGB"
        if mode == "RGBA":
            mask, mode = mask.convert("RGB"), "RGB"
        if mode in _ID_MODES or mode == "P":
            values = np.asarray(mask.convert("L") if mode == "1" else mask).astype(np.int64)
            return self._encode_ids(values, source)
        if mode != "RGB":
            raise DataError(f"mask {source}: unsupported image mode {mode!r} (expected L, P, I;16 or RGB)")
        rgb = np.asarray(mask).astype(np.int64)
        if self.match_colors:
            return self._encode_colors(rgb, source)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return self._encode_ids(rgb[..., 0], source)
        raise DataError(
            f"mask {source} is an RGB colour image but dataset.palette has no 'color' entries (expected a "
            "single-channel id mask, or give every palette entry a color)"
        )

    def _encode_ids(self, values: np.ndarray, source: str | Path) -> np.ndarray:
        if self.ids is None:
            raise DataError(
                f"mask {source} is a single-channel id mask but dataset.palette has no 'id' entries (give every "
                "palette entry an id, or use RGB colour masks)"
            )
        keys = np.append(self.ids, self.ignore_index)
        targets = np.append(np.arange(len(self.ids)), self.ignore_index)
        return _lookup(values, keys, targets, source, "id", str)

    def _encode_colors(self, rgb: np.ndarray, source: str | Path) -> np.ndarray:
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        keys = _pack(self.colors.astype(np.int64))
        targets = np.arange(len(keys))
        if self.ignore_color is not None:
            keys = np.append(keys, _pack(np.asarray([self.ignore_color], dtype=np.int64)))
            targets = np.append(targets, self.ignore_index)
        return _lookup(packed, keys, targets, source, "colour", _unpack_text)


def _pack(colors: np.ndarray) -> np.ndarray:
    return (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]


def _unpack_text(value: int) -> str:
    return str([(value >> 16) & 255, (value >> 8) & 255, value & 255])


def _lookup(values: np.ndarray, keys: np.ndarray, targets: np.ndarray, source, what: str, show) -> np.ndarray:
    """Map every value in ``keys`` to its ``targets`` entry; anything else is a DataError listing the values."""
    uniques, inverse = np.unique(values, return_inverse=True)
    position = {int(k): i for i, k in enumerate(keys.tolist())}
    mapped = np.empty(len(uniques), dtype=np.int64)
    unknown: list[int] = []
    for i, value in enumerate(uniques.tolist()):
        if value in position:
            mapped[i] = targets[position[value]]
        else:
            unknown.append(value)
    if unknown:
        counts = {v: int(np.count_nonzero(values == v)) for v in unknown[:10]}
        listed = ", ".join(f"{show(v)} ({n} px)" for v, n in counts.items())
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        known = ", ".join(show(int(k)) for k in keys[:20].tolist())
        raise DataError(
            f"mask {source}: unknown {what} value(s) {listed}{more}; expected a dataset.palette {what} or the "
            f"ignored value ({known})"
        )
    return mapped[inverse.reshape(values.shape)]


def colorize(mask: np.ndarray, palette: Palette) -> Image.Image:
    """Class-index mask -> RGB picture in the palette's display colours.

    Args:
        mask: int (H, W) class indices; ``ignore_index`` (or any value outside 0..K-1) is drawn black.
        palette: the palette.

    Returns:
        An ``RGB`` PIL image of size (W, H).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    table = np.concatenate([palette.colors, np.zeros((1, 3), dtype=np.uint8)])
    index = np.where((mask >= 0) & (mask < len(palette)), mask, len(palette)).astype(np.int64)
    return Image.fromarray(table[index])


def overlay(image: Image.Image | np.ndarray, mask: np.ndarray, palette: Palette, alpha: float = 0.5) -> Image.Image:
    """Blend the colourised mask over the image: ``(1 - alpha) * image + alpha * colour`` where not ignored.

    Args:
        image: RGB PIL image or uint8 (H, W, 3) array of the same size as ``mask``.
        mask: int (H, W) class indices; ignored / out-of-range pixels keep the image unchanged.
        palette: the palette.
        alpha: weight of the mask colour in [0, 1].

    Returns:
        An ``RGB`` PIL image of size (W, H).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    mask = np.asarray(mask)
    if pixels.shape[:2] != mask.shape:
        raise ValueError(f"image is {pixels.shape[:2]} but mask is {mask.shape}; they must match (H, W)")
    colours = np.asarray(colorize(mask, palette), dtype=np.float32)
    valid = ((mask >= 0) & (mask < len(palette)))[..., None]
    blended = np.where(valid, (1 - alpha) * pixels + alpha * colours, pixels)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
