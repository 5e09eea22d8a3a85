"""The ``segment`` task spec: model (backbone, neck, head), dataset, inference, train, evaluate, predict, export."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vfmkit.spec.base import EvaluateSpec, ExportSpec, PredictSpec, RunSpec, Section, TrainSpec
from vfmkit.spec.dense import SegmentDataSpec


class SegmentModelSpec(Section):
    backbone: str = Field("c-radio-v3-b", description="registry id/alias (`vfm models`), hf-hub:<repo> or a path")
    pretrained: bool = Field(True, description="load the backbone's published weights (False: random init)")
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
