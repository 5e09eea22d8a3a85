"""The ``change`` task spec (Visual ChangeNet): model, dataset, train, evaluate, predict, export.

Two variants share the spec (``task_type``):

- ``segment``: per-pixel change masks from image pairs in the LEVIR-CD layout (``dataset.format: levir``);
- ``classify``: golden-vs-test inspection from the 4-column CSV (``dataset.format: csv``), PASS/FAIL per sample.

When ``task_type`` is not given it follows ``dataset.format`` (levir -> segment, csv -> classify).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from vfmkit.spec.base import EvaluateSpec, ExportSpec, PredictSpec, RunSpec, Section, SpecPath, TrainSpec
from vfmkit.spec.dense import DenseAugmentSpec, no_duplicates


class ChangeAugmentSpec(DenseAugmentSpec):
    """Change-detection defaults: no random scale or crop (a plain resize), horizontal and vertical flips.

    For LEVIR tiles larger than the training size, ``scale_range: [1, 1]`` with ``scale_reference: image`` gives
    native-resolution random crops.
    """

    scale_range: tuple[float, float] | None = Field(
        None, description="random scale factor range (null: plain resize to the crop size, no crop)"
    )
    vflip: float = Field(0.5, ge=0, le=1, description="vertical flip probability")


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
        no_duplicates("light condition", self.light_conditions)
        if self.image_ext and not self.image_ext.startswith("."):
            raise ValueError(f"image_ext must start with a dot, got {self.image_ext!r}")
        if 0 <= self.ignore_index < 2:
            raise ValueError(f"ignore_index {self.ignore_index} is a class index (0 or 1)")
        return self


class ChangeModelSpec(Section):
    backbone: str = Field(
        "c-radio-v3-b", min_length=1, description="registry id/alias (`vfm models`), hf-hub:<repo> or a path"
    )
    pretrained: bool = Field(True, description="load the backbone's published weights (False: random init)")
    neck: Literal["vit_adapter", "simple_pyramid"] = Field(
        "vit_adapter", description="4-level pyramid neck: vit_adapter (SPM + deformable interactions) or simple_pyramid"
    )
    neck_channels: int = Field(128, ge=8, description="channels of every pyramid level the neck outputs")
    summary_fusion: bool = Field(False, description="add the backbone summary to every pyramid level (RADIO)")
    freeze_backbone: bool = Field(True, description="no gradients into the backbone (neck and head still train)")
    resolution: int = Field(256, ge=32, description="input side in pixels (a multiple of 32)")
    decoder_channels: int = Field(128, ge=8, description="embed_dim of the ChangeFormer decoder (TAO: 256)")
    difference: Literal["learnable", "euclidean"] = Field(
        "learnable",
        description="classify variant: learnable (difference modules + MLP, weighted CE) or euclidean "
        "(embeddings + contrastive loss, FAIL when the distance > threshold)",
    )
    embedding_dim: int = Field(16, ge=1, description="euclidean mode: embedding size (TAO embedding_vectors: 5)")
    margin: float = Field(2.0, gt=0, description="euclidean mode: contrastive-loss margin (TAO train_margin_euclid)")
    threshold: float | None = Field(
        None,
        description="FAIL when the score > threshold; score = distance (euclidean, default margin / 2) or FAIL "
        "probability (learnable, default 0.5)",
    )
    classifier_hidden: int = Field(64, ge=1, description="learnable mode: hidden width of the MLP classifier")
    learnable_levels: int = Field(4, ge=1, le=4, description="learnable mode: pyramid levels fused (finest first)")
    golden_reduce: Literal["min", "mean"] = Field(
        "min", description="multi-golden (learnable): how per-golden difference maps are combined"
    )
    class_weights: tuple[float, float] = Field(
        (1.0, 1.0), description="cross-entropy weights of [unchanged/PASS, changed/FAIL] (TAO classify: [1, 10])"
    )
    aux_weights: tuple[float, float, float, float, float] = Field(
        (0.5, 0.5, 0.5, 0.8, 1.0),
        description="segment: loss weights of the outputs [aux stride 32, 16, 8, 4, final] (TAO defaults)",
    )

    @model_validator(mode="after")
    def _check(self) -> ChangeModelSpec:
        if self.resolution % 32:
            raise ValueError(f"model.resolution must be a multiple of 32 (pyramid stride), got {self.resolution}")
        if min(self.class_weights) <= 0 or min(self.aux_weights) < 0 or sum(self.aux_weights) <= 0:
            raise ValueError("class_weights must be > 0 and aux_weights >= 0 with a positive sum")
        return self


class ChangeSpec(RunSpec):
    """Spec of ``vfm change train|evaluate|predict|export``."""

    task: Literal["change"] = Field("change", description="the task this spec is for")

    example: ClassVar[dict] = {"dataset": {"root": "data", "format": "levir"}}
    """Values ``vfm spec init`` writes for the required keys."""

    task_type: Literal["segment", "classify"] = Field(
        "segment", description="segment: change masks (levir data); classify: golden vs test PASS/FAIL (csv data)"
    )
    model: ChangeModelSpec = Field(default_factory=ChangeModelSpec)
    dataset: ChangeDataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    predict: PredictSpec = Field(default_factory=PredictSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)

    @model_validator(mode="before")
    @classmethod
    def _default_task_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("task_type") is None:
            dataset = data.get("dataset")
            fmt = dataset.get("format") if isinstance(dataset, dict) else getattr(dataset, "format", None)
            data = {**data, "task_type": "classify" if fmt == "csv" else "segment"}
        return data

    @model_validator(mode="after")
    def _check_variant(self) -> ChangeSpec:
        wanted = "levir" if self.task_type == "segment" else "csv"
        if self.dataset.format != wanted:
            raise ValueError(
                f"task_type {self.task_type!r} needs dataset.format {wanted!r}, got {self.dataset.format!r}"
            )
        if self.task_type == "classify" and self.model.difference == "euclidean" and self.dataset.num_golden > 1:
            raise ValueError("multi-golden (dataset.num_golden > 1) needs model.difference 'learnable'")
        return self

    @property
    def threshold(self) -> float:
        """The decision threshold of the classify variant (see ``model.threshold``)."""
        if self.model.threshold is not None:
            return self.model.threshold
        return self.model.margin / 2 if self.model.difference == "euclidean" else 0.5
