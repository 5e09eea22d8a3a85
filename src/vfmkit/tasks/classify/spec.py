"""The ``classify`` task spec: model, dataset, train, evaluate, predict, export."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from vfmkit.spec.base import (
    EvaluateSpec,
    ExportSpec,
    PredictSpec,
    RunSpec,
    Section,
    SpecPath,
    TrainSpec,
)


class ClassifyModelSpec(Section):
    backbone: str = Field(
        "c-radio-v3-b", min_length=1, description="registry id/alias (`vfm models`), hf-hub:<repo> or a path"
    )
    pretrained: bool = Field(True, description="load the backbone's published weights (False: random init)")
    mode: Literal["linear_probe", "finetune", "partial"] = Field(
        "linear_probe",
        description="linear_probe: frozen backbone, cached features; finetune: all layers with layer decay; "
        "partial: the last `partial_blocks` blocks",
    )
    partial_blocks: int = Field(2, ge=1, description="blocks trained in partial mode (from the end)")
    feature_runtime: Literal["torch", "onnxruntime"] = Field(
        "torch",
        description="linear_probe: what computes the cached features (onnxruntime: a cached, verified ONNX export on "
        "the CPU; evaluation, predict and export still run the PyTorch model)",
    )
    feature_int8: bool = Field(False, description="linear_probe with onnxruntime: int8 weight-quantized features")
    resolution: int = Field(224, ge=16, description="input side in pixels (a multiple of the patch size)")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the linear head")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")

    @model_validator(mode="after")
    def _check_feature_runtime(self) -> ClassifyModelSpec:
        if self.feature_int8 and self.feature_runtime != "onnxruntime":
            raise ValueError("model.feature_int8=true needs model.feature_runtime=onnxruntime")
        return self


class AugmentSpec(Section):
    random_resized_crop: tuple[float, float] | None = Field(
        (0.5, 1.0), description="area scale range of RandomResizedCrop in training (null: plain resize)"
    )
    hflip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    color_jitter: float = Field(0.0, ge=0, le=1, description="brightness/contrast/saturation jitter strength")


class ClassifyDataSpec(Section):
    format: Literal["folders", "csv"] = Field("folders", description="folders: root/<split>/<class>/*; csv: path,label")
    root: SpecPath | None = Field(None, description="dataset root (folders), or the base of relative CSV paths")
    train_split: str = Field("train", description="sub-folder of the training images (folders format)")
    val_split: str = Field("val", description="sub-folder of the validation images (folders format)")
    test_split: str = Field("test", description="sub-folder of the test images (folders format)")
    train_csv: SpecPath | None = Field(None, description="CSV of path,label rows for training (csv format)")
    val_csv: SpecPath | None = Field(None, description="CSV for validation (csv format)")
    test_csv: SpecPath | None = Field(None, description="CSV for testing (csv format)")
    classes_file: SpecPath | None = Field(None, description="one class name per line (default: sorted names)")
    augment: AugmentSpec = Field(default_factory=AugmentSpec)

    @model_validator(mode="after")
    def _check_format(self) -> ClassifyDataSpec:
        if self.format == "folders" and self.root is None:
            raise ValueError("dataset.root is required for format 'folders'")
        if self.format == "csv" and self.train_csv is None:
            raise ValueError("dataset.train_csv is required for format 'csv'")
        return self


class ClassifySpec(RunSpec):
    """Spec of ``vfm classify train|evaluate|predict|export``."""

    task: Literal["classify"] = Field("classify", description="the task this spec is for")

    example: ClassVar[dict] = {"dataset": {"root": "data"}}
    """Values ``vfm spec init`` writes for the required keys."""

    model: ClassifyModelSpec = Field(default_factory=ClassifyModelSpec)
    dataset: ClassifyDataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    predict: PredictSpec = Field(default_factory=PredictSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    top_k: int = Field(5, ge=1, description="k of top-k accuracy and of predictions")
