"""Spec sections shared by the dense tasks (segmentation, change detection, universal segmentation): the joint
image + mask augmentation, palette entries and the windowed-attention field."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vfmkit.spec.base import Section

Color = tuple[int, int, int]


def window_size_field() -> object:
    """The ``model.vitdet_window_size`` field of the dense tasks' model sections (one text for every task)."""
    return Field(
        None,
        ge=1,
        description="windowed attention with this window (patches) in all but 4 global blocks, simple_pyramid only "
        "(RADIO v2/v2.5/v4, timm ViTs, open_clip towers; see the detect task); the resolution must be a multiple "
        "of patch x window",
    )


class DenseAugmentSpec(Section):
    """Training augmentation applied jointly to the image(s) and the mask.

    Order: random scale, random crop (padded with 0 in the image and ``ignore_index`` in the mask when the scaled
    image is smaller than the crop), horizontal / vertical flip, colour jitter (images only). With
    ``scale_range: null`` the image is plainly resized to the crop size (aspect ratio not kept) and not cropped.
    """

    scale_range: tuple[float, float] | None = Field(
        (0.5, 2.0), description="random scale factor range (null: plain resize to the crop size, no crop)"
    )
    scale_reference: Literal["crop", "image"] = Field(
        "crop",
        description="crop: the factor scales the image resized so its short side equals the crop size; "
        "image: the factor scales the original image (native-resolution crops of large tiles)",
    )
    crop_size: int | None = Field(None, ge=8, description="square crop side in pixels (null: the model resolution)")
    hflip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    vflip: float = Field(0.0, ge=0, le=1, description="vertical flip probability")
    color_jitter: float = Field(
        0.0, ge=0, le=1, description="brightness/contrast/saturation jitter strength (images only, 0 = off)"
    )

    @model_validator(mode="after")
    def _check_range(self) -> DenseAugmentSpec:
        if self.scale_range is not None:
            low, high = self.scale_range
            if not 0 < low <= high:
                raise ValueError(f"scale_range must be [low, high] with 0 < low <= high, got {list(self.scale_range)}")
        return self


class PaletteEntry(Section):
    """One class of a segmentation palette; its class index is its position in the list."""

    name: str = Field(min_length=1, description="class name")
    id: int | None = Field(None, ge=0, description="value of the class in single-channel (L/P/I) id masks")
    color: Color | None = Field(None, description="[r, g, b] of the class in RGB masks (and in overlays)")

    @model_validator(mode="after")
    def _check(self) -> PaletteEntry:
        if self.id is None and self.color is None:
            raise ValueError(f"palette entry {self.name!r} needs an 'id' (id masks) or a 'color' (RGB masks)")
        if self.color is not None and not all(0 <= c <= 255 for c in self.color):
            raise ValueError(f"palette entry {self.name!r}: color values must be in 0..255, got {list(self.color)}")
        return self


def no_duplicates(what: str, values: list) -> None:
    seen: set = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}; every entry must be unique")
        seen.add(value)
