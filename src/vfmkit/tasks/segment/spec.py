"""The ``segment`` task spec: model (backbone, neck, head), dataset, inference, train, evaluate, predict, export."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from vfmkit.spec.base import EvaluateSpec, ExportSpec, PredictSpec, RunSpec, Section, SpecPath, TrainSpec
from vfmkit.spec.dense import Color, DenseAugmentSpec, PaletteEntry, no_duplicates, window_size_field


class SegmentAugmentSpec(DenseAugmentSpec):
    """Segmentation defaults: random scale 0.5-2 relative to the crop, horizontal flip, light colour jitter."""

    color_jitter: float = Field(
        0.2, ge=0, le=1, description="brightness/contrast/saturation jitter strength (images only, 0 = off)"
    )


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
        no_duplicates("name", names)
        with_id = [entry.id is not None for entry in self.palette]
        with_color = [entry.color is not None for entry in self.palette]
        if any(with_id) and not all(with_id):
            raise ValueError("palette: give an 'id' for every class or for none")
        if any(with_color) and not all(with_color):
            raise ValueError("palette: give a 'color' for every class or for none")
        if all(with_id):
            ids = [entry.id for entry in self.palette]
            no_duplicates("id", ids)
            if self.ignore_index in ids:
                raise ValueError(
                    f"palette id {self.ignore_index} equals ignore_index; set ignore_index to a value no class uses "
                    "(e.g. 254 for 0/255 binary masks)"
                )
        if all(with_color):
            colors = [entry.color for entry in self.palette]
            no_duplicates("color", colors)
            if self.ignore_color is not None and self.ignore_color in colors:
                raise ValueError(f"ignore_color {list(self.ignore_color)} is also a palette colour")
        if 0 <= self.ignore_index < len(self.palette):
            raise ValueError(f"ignore_index {self.ignore_index} is a class index (0..{len(self.palette) - 1})")
        return self


class SegmentModelSpec(Section):
    backbone: str = Field(
        "c-radio-v3-b", min_length=1, description="registry id/alias (`vfm models`), hf-hub:<repo> or a path"
    )
    pretrained: bool = Field(True, description="load the backbone's published weights (False: random init)")
    vitdet_window_size: int | None = window_size_field()
    neck: Literal["vit_adapter", "simple_pyramid"] = Field(
        "vit_adapter", description="vit_adapter (deformable-attention interactions) or simple_pyramid (ViTDet, cheaper)"
    )
    neck_channels: int | None = Field(None, ge=8, description="pyramid channels (null: the backbone width)")
    summary_fusion: bool = Field(True, description="add the projected backbone summary to every pyramid level")
    freeze_backbone: bool = Field(True, description="train the neck and head only (false: fine-tune everything)")
    decoder_channels: int = Field(256, ge=8, description="SegFormer head width")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the classifier")
    resolution: int = Field(512, ge=32, description="training crop / inference window side in pixels")
    dice_weight: float = Field(0.0, ge=0, description="weight of a multi-class dice loss added to cross-entropy")


class InferenceSpec(Section):
    mode: Literal["auto", "resize", "sliding"] = Field(
        "auto",
        description="resize: whole image resized to the resolution; sliding: windows of the resolution over the "
        "image at its own size; auto: sliding when a side exceeds the resolution",
    )
    overlap: float = Field(1 / 3, ge=0, lt=1, description="sliding windows overlap (stride = window * (1 - overlap))")


class SegmentSpec(RunSpec):
    """Spec of ``vfm segment train|evaluate|predict|export``."""

    task: Literal["segment"] = Field("segment", description="the task this spec is for")

    example: ClassVar[dict] = {
        "dataset": {"root": "data", "palette": [{"name": "background", "id": 0}, {"name": "object", "id": 1}]}
    }
    """Values ``vfm spec init`` writes for the required keys."""

    model: SegmentModelSpec = Field(default_factory=SegmentModelSpec)
    dataset: SegmentDataSpec
    inference: InferenceSpec = Field(default_factory=InferenceSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    predict: PredictSpec = Field(default_factory=PredictSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
