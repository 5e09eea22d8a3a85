"""Dataset spec sections of the dense tasks: semantic segmentation (``segment``) and change detection (``change``).

The task specs (model, train, ...) import :class:`SegmentDataSpec` and :class:`ChangeDataSpec` as their ``dataset``
section. Layouts, mask conventions and the CSV format are described on the classes and in
:mod:`vfmkit.data.segmentation`, :mod:`vfmkit.data.change` and :mod:`vfmkit.data.change_csv`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vfmkit.spec.base import Section, SpecPath

Color = tuple[int, int, int]


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


class SegmentAugmentSpec(DenseAugmentSpec):
    """Segmentation defaults: random scale 0.5-2 relative to the crop, horizontal flip, light colour jitter."""

    color_jitter: float = Field(
        0.2, ge=0, le=1, description="brightness/contrast/saturation jitter strength (images only, 0 = off)"
    )


class ChangeAugmentSpec(DenseAugmentSpec):
    """Change-detection defaults: no random scale or crop (a plain resize), horizontal and vertical flips.

    For LEVIR tiles larger than the training size, ``scale_range: [1, 1]`` with ``scale_reference: image`` gives
    native-resolution random crops.
    """

    scale_range: tuple[float, float] | None = Field(
        None, description="random scale factor range (null: plain resize to the crop size, no crop)"
    )
    vflip: float = Field(0.5, ge=0, le=1, description="vertical flip probability")


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


class SegmentDataSpec(Section):
    """``root/<images_dir>/<split>/**/<stem><image_suffix>.<ext>`` paired with
    ``root/<masks_dir>/<split>/**/<stem><mask_suffix>.<ext>`` by relative folder and stem (any image extension).

    Masks are single-channel id images (``L``, ``P``, ``I;16``: pixel = palette ``id``) or RGB colour images
    (pixel = palette ``color``); pixels equal to ``ignore_index`` (id masks) or ``ignore_color`` (RGB masks) are
    ignored by the loss and the metrics.
    """

    root: SpecPath = Field(description="dataset root folder")
    images_dir: str = Field("images", min_length=1, description="folder of images under root (then <split>/)")
    masks_dir: str = Field("masks", min_length=1, description="folder of masks under root (then <split>/)")
    train_split: str = Field("train", min_length=1, description="split folder name of the training data")
    val_split: str = Field("val", min_length=1, description="split folder name of the validation data")
    test_split: str = Field("test", min_length=1, description="split folder name of the test data")
    image_suffix: str = Field("", description="stem suffix of images, removed before pairing (e.g. _leftImg8bit)")
    mask_suffix: str = Field("", description="stem suffix of masks, removed before pairing (e.g. _mask)")
    palette: list[PaletteEntry] = Field(
        min_length=2, description="classes in index order: [{name, id}] for id masks or [{name, color}] for RGB masks"
    )
    ignore_index: int = Field(255, description="target value of ignored pixels; also the ignored value in id masks")
    ignore_color: Color | None = Field(None, description="RGB colour of ignored pixels in RGB masks (null: none)")
    augment: SegmentAugmentSpec = Field(default_factory=SegmentAugmentSpec, description="joint training augmentation")

    @model_validator(mode="after")
    def _check_palette(self) -> SegmentDataSpec:
        names = [entry.name for entry in self.palette]
        _no_duplicates("name", names)
        with_id = [entry.id is not None for entry in self.palette]
        with_color = [entry.color is not None for entry in self.palette]
        if any(with_id) and not all(with_id):
            raise ValueError("palette: give an 'id' for every class or for none")
        if any(with_color) and not all(with_color):
            raise ValueError("palette: give a 'color' for every class or for none")
        if all(with_id):
            ids = [entry.id for entry in self.palette]
            _no_duplicates("id", ids)
            if self.ignore_index in ids:
                raise ValueError(
                    f"palette id {self.ignore_index} equals ignore_index; set ignore_index to a value no class uses "
                    "(e.g. 254 for 0/255 binary masks)"
                )
        if all(with_color):
            colors = [entry.color for entry in self.palette]
            _no_duplicates("color", colors)
            if self.ignore_color is not None and self.ignore_color in colors:
                raise ValueError(f"ignore_color {list(self.ignore_color)} is also a palette colour")
        if 0 <= self.ignore_index < len(self.palette):
            raise ValueError(f"ignore_index {self.ignore_index} is a class index (0..{len(self.palette) - 1})")
        return self


class ChangeDataSpec(Section):
    """Change-detection data, two formats.

    ``levir`` (segment variant): ``root/{A,B,label}/<name>`` with names listed in ``root/list/<split>.txt``;
    labels are binary masks (0 unchanged, 255 or 1 changed).

    ``csv`` (classify variant, golden vs test): rows ``input_path,golden_path,label,object_name``; the test image of
    light condition ``s`` is ``<image_root>/<input_path>/<object_name><s><image_ext>`` and its golden
    ``<image_root>/<golden_path>/<object_name><s><image_ext>``; the light conditions are concatenated along channels
    (3 per condition); ``label`` is PASS/FAIL (case-insensitive) or 0/1 (0 = PASS).
    """

    format: Literal["levir", "csv"] = Field("levir", description="levir: A/B/label/list; csv: golden vs test rows")
    root: SpecPath | None = Field(None, description="dataset root (levir)")
    a_dir: str = Field("A", min_length=1, description="folder of the first-time (reference) images (levir)")
    b_dir: str = Field("B", min_length=1, description="folder of the second-time images (levir)")
    label_dir: str = Field("label", min_length=1, description="folder of the binary change masks (levir)")
    list_dir: str = Field("list", min_length=1, description="folder of <split>.txt name lists (levir)")
    train_split: str = Field("train", min_length=1, description="list file stem of the training split (levir)")
    val_split: str = Field("val", min_length=1, description="list file stem of the validation split (levir)")
    test_split: str = Field("test", min_length=1, description="list file stem of the test split (levir)")
    train_csv: SpecPath | None = Field(None, description="training CSV (csv format)")
    val_csv: SpecPath | None = Field(None, description="validation CSV (csv format)")
    test_csv: SpecPath | None = Field(None, description="test CSV (csv format)")
    image_root: SpecPath | None = Field(None, description="base of the CSV's relative dirs (default: the CSV's folder)")
    image_ext: str = Field(".png", description="file extension of the CSV format's images, with the dot")
    light_conditions: list[str] = Field(
        [""], min_length=1, description="file-name suffixes of the lighting conditions, e.g. ['_L0', '_L1']"
    )
    num_golden: int = Field(1, ge=1, description="golden images per sample (csv format; > 1 = multi-golden)")
    ignore_index: int = Field(255, description="mask value of padded (ignored) pixels after augmentation")
    augment: ChangeAugmentSpec = Field(
        default_factory=ChangeAugmentSpec, description="joint augmentation of both images (and the mask)"
    )

    @model_validator(mode="after")
    def _check_format(self) -> ChangeDataSpec:
        if self.format == "levir" and self.root is None:
            raise ValueError("dataset.root is required for format 'levir'")
        if self.format == "csv" and self.train_csv is None:
            raise ValueError("dataset.train_csv is required for format 'csv'")
        _no_duplicates("light condition", self.light_conditions)
        if self.image_ext and not self.image_ext.startswith("."):
            raise ValueError(f"image_ext must start with a dot, got {self.image_ext!r}")
        if 0 <= self.ignore_index < 2:
            raise ValueError(f"ignore_index {self.ignore_index} is a class index (0 or 1)")
        return self


def _no_duplicates(what: str, values: list) -> None:
    seen: set = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}; every entry must be unique")
        seen.add(value)
