"""The ``detect`` task spec: model (backbone, neck, DETR head with TAO's field names, frozen foundation model),
dataset (COCO JSON sources or a YOLO folder), train, evaluate, predict, export.

Head fields left at null take the preset's value (``rtdetr``, ``dino`` or the light ``lw-n`` / ``lw-s`` / ``lw-m``,
see :mod:`vfmkit.models.heads.detr.config`); so do ``model.neck`` and ``model.resolution``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from vfmkit.models.heads.detr.config import DETR_PRESETS
from vfmkit.spec.base import (
    EvaluateSpec,
    ExportSpec,
    OptimizerSpec,
    PredictSpec,
    RunSpec,
    Section,
    SpecPath,
    TrainSpec,
)


class FrozenFMSpec(Section):
    enabled: bool = Field(False, description="add a frozen foundation model beside the main backbone (Frozen-DETR)")
    backbone: str = Field(
        "c-radio-v3-b", min_length=1, description="registry id/alias (`vfm models`), hf-hub:<repo> or a path"
    )
    pretrained: bool = Field(True, description="load its published weights (False: random init, for tests)")
    checkpoint: SpecPath | None = Field(
        None, description="local weights file for it, loaded instead of the published source (needs pretrained: true)"
    )
    input_scale: float = Field(0.5, gt=0, le=4, description="its input is the image resized by this factor (TAO 0.5)")


class DetectLossSpec(Section):
    cls_loss: Literal["vfl", "focal", "ia_bce"] | None = Field(
        None, description="classification loss: vfl (rtdetr), focal (dino) or ia_bce (lw-*); null: the preset's"
    )
    focal_alpha: float | None = Field(
        None, ge=0, le=1, description="alpha of the classification loss (rtdetr 0.75, dino 0.25; ia_bce: 0.25)"
    )
    focal_gamma: float | None = Field(None, ge=0, description="gamma of the classification loss (2)")
    cls_loss_coef: float | None = Field(None, ge=0, description="classification loss weight (rtdetr 1, dino 2)")
    bbox_loss_coef: float | None = Field(None, ge=0, description="L1 box loss weight (5)")
    giou_loss_coef: float | None = Field(None, ge=0, description="GIoU loss weight (2)")
    set_cost_class: float | None = Field(None, ge=0, description="matching cost weight of the class (2)")
    set_cost_bbox: float | None = Field(None, ge=0, description="matching cost weight of the L1 box distance (5)")
    set_cost_giou: float | None = Field(None, ge=0, description="matching cost weight of -GIoU (2)")


class DetectModelSpec(Section):
    backbone: str = Field(
        "c-radio-v3-b",
        min_length=1,
        description="registry id/alias (`vfm models`), hf-hub:<repo>, a path, or timm:<arch> (e.g. timm:resnet50) "
        "for a trainable timm CNN without a neck",
    )
    pretrained: bool = Field(True, description="load the backbone's published weights (False: random init)")
    backbone_checkpoint: SpecPath | None = Field(
        None,
        description="local weights file for the main backbone, loaded instead of its published weights (needs "
        "model.pretrained: true; not with a test variant or a backbone given as a path)",
    )
    freeze_backbone: bool | None = Field(
        None, description="null: frozen for foundation models (neck and head train), trained for timm CNNs"
    )
    neck: Literal["simple_pyramid", "vit_adapter", "projector"] | None = Field(
        None,
        description="simple_pyramid (ViTDet, cheap), vit_adapter (deformable interactions) or projector (LW-DETR's "
        "blocks 3/6/9/12 concatenated and projected); null: the head's (projector for lw-*, else simple_pyramid)",
    )
    neck_channels: int | None = Field(None, ge=8, description="pyramid channels (null: hidden_dim)")
    summary_fusion: bool = Field(False, description="add the projected backbone summary to every pyramid level")
    vitdet_window_size: int | None = Field(
        None,
        ge=1,
        description="windowed attention with this window (patches) in all but 4 global blocks, with simple_pyramid "
        "or projector: RADIO v2/v2.5/v4 (RADIO's ViTDet mode), timm ViTs such as DINOv2 and open_clip towers "
        "(RF-DETR's: class/register tokens copied into every window); model.resolution must be a multiple of "
        "patch x window (e.g. 18 at 576 px, patch 16: 2 x 2 windows)",
    )
    patch_size: int | None = Field(
        None,
        ge=2,
        description="timm ViT / open_clip backbones: resample the patch embedding to this patch size at load (e.g. 16 "
        "for DINOv2's 14, as RF-DETR; the position embedding is resized too); null: the backbone's own",
    )
    head: Literal["rtdetr", "dino", "lw-n", "lw-s", "lw-m"] = Field(
        "rtdetr",
        description="DETR preset: rtdetr (3 levels, hybrid encoder), dino (4 levels, deformable encoder) or the light "
        "LW-DETR family lw-n / lw-s / lw-m (projector P4 level, no encoder, 2 / 3 / 4 decoder layers, 384 / 512 / "
        "576 px)",
    )
    resolution: int | None = Field(
        None,
        ge=32,
        description="training / inference side in pixels, a multiple of the backbone's patch size (32 for timm CNNs; "
        "e.g. 644 or 672 for patch 14); null: the head's (640 rtdetr / dino, 384 / 512 / 576 lw-n / s / m)",
    )
    num_queries: int | None = Field(None, ge=1, description="object queries (rtdetr 300, dino 900)")
    num_select: int | None = Field(None, ge=1, description="detections kept per image by the post-processing (300)")
    hidden_dim: int | None = Field(None, ge=8, description="transformer width (256)")
    nheads: int | None = Field(None, ge=1, description="attention heads (8)")
    enc_layers: int | None = Field(None, ge=0, description="encoder layers (rtdetr 1 AIFI layer, dino 6, lw-* none)")
    dec_layers: int | None = Field(None, ge=1, description="decoder layers (rtdetr / dino 6, lw-n / s / m 2 / 3 / 4)")
    dim_feedforward: int | None = Field(None, ge=8, description="FFN width (rtdetr 1024, dino 2048)")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout in attention and FFN blocks (0)")
    enc_n_points: int | None = Field(None, ge=1, description="deformable encoder sampling points (4)")
    dec_n_points: int | None = Field(None, ge=1, description="decoder sampling points per head and level (4, lw-* 2)")
    num_feature_levels: int | None = Field(None, ge=1, description="decoder levels (rtdetr 3, dino 4, lw-* 1)")
    two_stage: bool | None = Field(None, description="queries from the top-k encoder proposals (true)")
    learnt_init_query: bool | None = Field(
        None, description="learned content queries (dino, lw-*) or selected features (rtdetr)"
    )
    dn_number: int | None = Field(None, ge=0, description="denoising queries per image, 0 = off (100, lw-* 0)")
    dn_label_noise_ratio: float | None = Field(None, ge=0, le=1, description="denoising label noise (0.5)")
    dn_box_noise_scale: float | None = Field(None, ge=0, description="denoising box noise (1.0)")
    aux_loss: bool | None = Field(None, description="losses on every decoder layer (true)")
    group_detr: int | None = Field(
        None, ge=1, description="training-only Group DETR query groups, 1 = off (lw-* 13, rtdetr / dino 1)"
    )
    feat_strides: list[int] | None = Field(
        None, description="strides the head reads from the neck (rtdetr / dino [8, 16, 32]; lw-* [16], or [8, 16, 32])"
    )
    loss: DetectLossSpec = Field(default_factory=DetectLossSpec)
    frozen_fm: FrozenFMSpec = Field(default_factory=FrozenFMSpec)

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data):
        """``neck`` and ``resolution`` left at null take the head preset's values."""
        if isinstance(data, dict):
            preset = DETR_PRESETS.get(data.get("head") or "rtdetr")
            if preset is not None:
                data = dict(data)
                if data.get("neck") is None:
                    data["neck"] = preset.neck
                if data.get("resolution") is None:
                    data["resolution"] = preset.resolution
        return data


class DataSourceSpec(Section):
    image_dir: SpecPath = Field(description="folder the JSON's file_name entries are relative to")
    json_file: SpecPath = Field(description="COCO instances JSON")


class DetectAugmentSpec(Section):
    multi_scales: list[int] | None = Field(
        None,
        description="sizes drawn per training batch, multiples of the backbone's patch size (e.g. [480, 512, ..., "
        "800]; null: model.resolution only)",
    )
    photometric: float = Field(0.8, ge=0, le=1, description="photometric distortion probability")
    zoom_out: float = Field(0.5, ge=0, le=1, description="random zoom-out probability")
    iou_crop: float = Field(0.8, ge=0, le=1, description="random IoU crop probability")
    hflip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    min_box_size: float = Field(1.0, ge=0, description="boxes smaller than this (pixels) after cropping are dropped")

    @model_validator(mode="after")
    def _check_scales(self) -> DetectAugmentSpec:
        if self.multi_scales is not None and (not self.multi_scales or any(s < 32 for s in self.multi_scales)):
            raise ValueError(f"augment.multi_scales must be sizes of at least 32, got {self.multi_scales}")
        return self


class DetectDataSpec(Section):
    format: Literal["coco", "yolo"] = Field("coco", description="coco: JSON + image folder; yolo: images/ + labels/")
    train_data_sources: list[DataSourceSpec] | None = Field(None, description="coco: [{image_dir, json_file}, ...]")
    val_data_sources: list[DataSourceSpec] | None = Field(None, description="coco: validation sources")
    test_data_sources: list[DataSourceSpec] | None = Field(None, description="coco: test sources")
    root: SpecPath | None = Field(None, description="yolo: folder with images/<split>/ and labels/<split>/")
    names: list[str] | None = Field(
        None, description="yolo: class names, the list index is the class id (null: 'names' of <root>/data.yaml)"
    )
    train_split: str = Field("train", description="yolo: training sub-folder")
    val_split: str = Field("val", description="yolo: validation sub-folder")
    test_split: str = Field("test", description="yolo: test sub-folder")
    num_classes: int | None = Field(
        None, ge=1, description="null: derived from the data (an explicit value must agree)"
    )
    augment: DetectAugmentSpec = Field(default_factory=DetectAugmentSpec)

    @model_validator(mode="after")
    def _check_format(self) -> DetectDataSpec:
        if self.format == "coco" and not self.train_data_sources:
            raise ValueError("dataset.train_data_sources is required for format 'coco'")
        if self.format == "yolo" and self.root is None:
            raise ValueError("dataset.root is required for format 'yolo' (the folder with images/ and labels/)")
        return self


class DetectPredictSpec(PredictSpec):
    conf_threshold: float = Field(0.5, ge=0, le=1, description="keep detections with a score at least this")


class DetectExportSpec(ExportSpec):
    postprocess: bool = Field(
        False, description="also output top-k boxes (xyxy pixels), scores and labels (original category ids)"
    )
    int8: bool = Field(
        False,
        description="also write <name>_int8.onnx: onnxruntime dynamic int8 weights (MatMul/Gemm), compared with the "
        "fp32 graph (mean IoU of matched boxes on the verification images, AP50 change on the val split)",
    )
    int8_min_iou: float = Field(
        0.5, ge=0, le=1, description="export.int8: refuse the int8 graph below this mean IoU of matched boxes"
    )


def _detect_train() -> TrainSpec:
    """RT-DETR's optimisation defaults: AdamW 1e-4 (backbone x0.1), weight decay 1e-4, gradient clip 0.1."""
    return TrainSpec(epochs=72, batch_size=8, grad_clip=0.1, optimizer=OptimizerSpec(lr=1e-4, weight_decay=1e-4))


class DetectSpec(RunSpec):
    """Spec of ``vfm detect train|evaluate|predict|export``."""

    task: Literal["detect"] = Field("detect", description="the task this spec is for")

    example: ClassVar[dict] = {
        "dataset": {
            "train_data_sources": [{"image_dir": "data/train", "json_file": "data/annotations/train.json"}],
            "val_data_sources": [{"image_dir": "data/val", "json_file": "data/annotations/val.json"}],
        }
    }
    """Values ``vfm spec init`` writes for the required keys."""

    model: DetectModelSpec = Field(default_factory=DetectModelSpec)
    dataset: DetectDataSpec
    train: TrainSpec = Field(default_factory=_detect_train)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    predict: DetectPredictSpec = Field(default_factory=DetectPredictSpec)
    export: DetectExportSpec = Field(default_factory=DetectExportSpec)
