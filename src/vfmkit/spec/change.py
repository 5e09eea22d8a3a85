"""The ``change`` task spec (Visual ChangeNet): model, dataset, train, evaluate, predict, export.

Two variants share the spec (``task_type``):

- ``segment``: per-pixel change masks from image pairs in the LEVIR-CD layout (``dataset.format: levir``);
- ``classify``: golden-vs-test inspection from the 4-column CSV (``dataset.format: csv``), PASS/FAIL per sample.

When ``task_type`` is not given it follows ``dataset.format`` (levir -> segment, csv -> classify).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from vfmkit.spec.base import EvaluateSpec, ExportSpec, PredictSpec, RunSpec, Section, TrainSpec
from vfmkit.spec.dense import ChangeDataSpec


class ChangeModelSpec(Section):
    backbone: str = Field("c-radio-v3-b", description="registry id/alias (`vfm models`), hf-hub:<repo> or a path")
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
