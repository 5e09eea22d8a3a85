"""The ``universal`` task spec (alias ``oneformer``): one Mask2Former / OneFormer model for semantic, instance and
panoptic segmentation; model, dataset, train, evaluate, predict, export.

Head field names follow TAO's OneFormer spec (``num_object_queries``, ``dec_layers``, ``hidden_dim``, ``nheads``,
``dim_feedforward``, ``class_weight`` ...). OneFormer's query-text contrastive loss compares the images of a step with
each other: it needs ``train.batch_size >= 2`` (with 1 it is 0, and training warns once).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

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
from vfmkit.spec.dense import DenseAugmentSpec, window_size_field
from vfmkit.tasks.segment.spec import SegmentDataSpec  # universal reads the segment task's mask folders

Task = Literal["semantic", "instance", "panoptic"]


class UniversalAugmentSpec(DenseAugmentSpec):
    """Large-scale jitter as OneFormer / TAO train it: random scale 0.1-2 of the crop size, square crop padded with
    VOID, horizontal flip; colour jitter off."""

    scale_range: tuple[float, float] | None = Field(
        (0.1, 2.0), description="random scale factor range (null: plain resize to the crop size, no crop)"
    )


class CocoSplitSpec(Section):
    """One split of a COCO-format dataset."""

    images: SpecPath = Field(description="folder of the images (the JSON's images[].file_name are relative to it)")
    annotations: SpecPath = Field(
        description="the annotation JSON: panoptic_*.json (coco_panoptic) or instances_*.json (coco_instances)"
    )
    panoptic: SpecPath | None = Field(
        None, description="coco_panoptic: folder of the PNGs (null: the annotations path without .json, as in COCO)"
    )


class SemanticMasksSpec(SegmentDataSpec):
    """Semantic masks in the segment task's layout: ``root/<images_dir>/<split>/**/<stem>.<ext>`` paired with
    ``root/<masks_dir>/<split>/**/<stem>.<ext>``; masks hold palette ids (single channel) or palette colours (RGB).
    Every class is stuff: only the semantic task can be trained from such data. The augmentation is
    ``dataset.augment`` (this section's ``augment`` is not used)."""

    @model_validator(mode="after")
    def _augment_elsewhere(self) -> SemanticMasksSpec:
        # the default is accepted: a saved spec (checkpoints, spec.resolved.yaml) writes every field
        if self.augment != type(self).model_fields["augment"].default_factory():
            raise ValueError("dataset.semantic.augment is not used by the universal task; set dataset.augment")
        return self


class TaskProbSpec(Section):
    """How often each task is drawn for a training sample (plain probabilities adding up to 1)."""

    semantic: float = Field(0.33, ge=0, le=1, description="probability of semantic targets (one mask per class)")
    instance: float = Field(0.33, ge=0, le=1, description="probability of instance targets (things only)")
    panoptic: float = Field(0.34, ge=0, le=1, description="probability of panoptic targets (every segment)")

    @model_validator(mode="after")
    def _check_sum(self) -> TaskProbSpec:
        total = self.semantic + self.instance + self.panoptic
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"task probabilities must add up to 1, got {total:g}")
        return self

    def as_dict(self) -> dict[str, float]:
        return {"semantic": self.semantic, "instance": self.instance, "panoptic": self.panoptic}


class UniversalDataSpec(Section):
    """The dataset: COCO panoptic (``train`` / ``val`` / ``test`` splits), COCO instances (polygons or RLE) or semantic
    masks (``semantic``). Category ids are kept as in the files; predictions are written with them."""

    format: Literal["coco_panoptic", "coco_instances", "semantic_masks"] = Field(
        "coco_panoptic",
        description="coco_panoptic: PNG + segments_info; coco_instances: instance JSON; "
        "semantic_masks: class-mask folders with a palette",
    )
    train: CocoSplitSpec | None = Field(None, description="training split (coco formats)")
    val: CocoSplitSpec | None = Field(None, description="validation split (coco formats; null: no validation)")
    test: CocoSplitSpec | None = Field(None, description="test split (coco formats)")
    semantic: SemanticMasksSpec | None = Field(None, description="the semantic_masks layout and palette")
    task_prob: TaskProbSpec | None = Field(
        None,
        description="training task probabilities {semantic, instance, panoptic} (null: OneFormer's 0.33 / 0.33 / "
        "0.34 for oneformer on coco_panoptic, panoptic for mask2former; instance for coco_instances, semantic for "
        "semantic_masks)",
    )
    augment: UniversalAugmentSpec = Field(default_factory=UniversalAugmentSpec, description="joint augmentation")

    @model_validator(mode="after")
    def _check_format(self) -> UniversalDataSpec:
        if self.format == "semantic_masks":
            if self.semantic is None:
                raise ValueError("dataset.semantic (root, palette ...) is required for format semantic_masks")
            if self.task_prob is not None and (self.task_prob.instance > 0 or self.task_prob.panoptic > 0):
                raise ValueError(
                    "semantic masks have no instances: set dataset.task_prob to {semantic: 1} (or leave it null)"
                )
        elif self.train is None:
            raise ValueError(f"dataset.train (images, annotations) is required for format {self.format}")
        return self


class PixelDecoderSpec(Section):
    transformer_enc_layers: int = Field(6, ge=0, description="deformable-attention encoder layers")
    conv_dim: int = Field(256, ge=8, description="pixel decoder width")
    mask_dim: int = Field(256, ge=8, description="channels of the stride-4 mask features")
    dim_feedforward: int = Field(1024, ge=8, description="encoder FFN width")
    n_points: int = Field(4, ge=1, description="deformable samples per head and level")
    norm: Literal["gn", "bn", "ln"] = Field("gn", description="norm of the projections and FPN convs")


class TextEncoderSpec(Section):
    context_length: int = Field(77, ge=8, description="tokens per contrastive text")
    width: int = Field(256, ge=8, description="text transformer width")
    num_layers: int = Field(6, ge=1, description="text transformer layers")
    n_ctx: int = Field(16, ge=0, description="learned context vectors appended to the text queries")
    proj_num_layers: int = Field(2, ge=1, description="layers of the text projector MLP")


class UniversalTestSpec(Section):
    object_mask_threshold: float = Field(0.8, ge=0, le=1, description="panoptic: minimum class score of a query")
    overlap_threshold: float = Field(0.8, ge=0, le=1, description="panoptic: minimum share of its mask a query wins")
    test_topk_per_image: int = Field(100, ge=1, description="instance: (query, class) pairs kept per image")


class UniversalModelSpec(Section):
    backbone: str = Field(
        "c-radio-v3-b", min_length=1, description="registry id/alias (`vfm models`), hf-hub:<repo> or a path"
    )
    pretrained: bool = Field(True, description="load the backbone's published weights (False: random init)")
    vitdet_window_size: int | None = window_size_field()
    neck: Literal["simple_pyramid", "vit_adapter"] = Field(
        "simple_pyramid", description="simple_pyramid (TAO's D2RADIO: ViTDet pyramid) or vit_adapter"
    )
    neck_channels: int = Field(256, ge=8, description="pyramid channels")
    summary_fusion: bool = Field(False, description="add the projected backbone summary to every pyramid level")
    freeze_backbone: bool = Field(False, description="train neck and heads only (false: fine-tune the backbone too)")
    resolution: int = Field(1024, ge=32, description="training crop / inference side in pixels (multiple of 32)")
    head: Literal["mask2former", "oneformer"] = Field(
        "oneformer",
        description="mask2former (learned queries) or oneformer (task-conditioned queries, text branch; "
        "its contrastive loss needs train.batch_size >= 2)",
    )
    num_object_queries: int = Field(150, ge=2, description="queries N (oneformer: N - 1 object queries + task)")
    hidden_dim: int = Field(256, ge=8, description="query width")
    nheads: int = Field(8, ge=1, description="attention heads (decoder and pixel decoder)")
    dim_feedforward: int = Field(2048, ge=8, description="decoder FFN width")
    dec_layers: int = Field(10, ge=1, description="predictions per forward = masked-attention layers + 1")
    pre_norm: bool = Field(False, description="pre-norm decoder layers")
    enforce_input_proj: bool = Field(False, description="1x1-project pixel-decoder maps even at equal width")
    dropout: float = Field(0.0, ge=0, lt=1, description="decoder dropout")
    class_dec_layers: int = Field(2, ge=1, description="oneformer: layers of the query-init class transformer")
    use_task_norm: bool = Field(True, description="oneformer: LayerNorm the task token")
    pixel_decoder: PixelDecoderSpec = Field(default_factory=PixelDecoderSpec)
    text_encoder: TextEncoderSpec = Field(default_factory=TextEncoderSpec)
    class_weight: float = Field(2.0, ge=0, description="class loss / matching cost weight")
    mask_weight: float = Field(5.0, ge=0, description="mask BCE loss / cost weight")
    dice_weight: float = Field(5.0, ge=0, description="mask dice loss / cost weight")
    no_object_weight: float = Field(0.1, ge=0, description="cross-entropy weight of the no-object class")
    contrastive_weight: float = Field(
        0.5, ge=0, description="oneformer: query-text contrastive loss weight (needs train.batch_size >= 2)"
    )
    contrastive_temperature: float = Field(0.07, gt=0, description="oneformer: initial contrastive temperature")
    train_num_points: int = Field(12544, ge=16, description="points sampled per mask for costs and losses")
    oversample_ratio: float = Field(3.0, ge=1, description="candidate points per kept point (importance sampling)")
    importance_sample_ratio: float = Field(0.75, ge=0, le=1, description="share of points taken where uncertain")
    deep_supervision: bool = Field(True, description="supervise every decoder layer's predictions")
    test: UniversalTestSpec = Field(default_factory=UniversalTestSpec)

    @model_validator(mode="after")
    def _check(self) -> UniversalModelSpec:
        if self.resolution % 32:
            raise ValueError(f"model.resolution must be a multiple of 32, got {self.resolution}")
        if self.head == "oneformer" and self.text_encoder.n_ctx >= self.num_object_queries:
            raise ValueError(
                f"model.text_encoder.n_ctx ({self.text_encoder.n_ctx}) must be smaller than "
                f"model.num_object_queries ({self.num_object_queries})"
            )
        return self


class UniversalOptimizerSpec(OptimizerSpec):
    lr: float = Field(
        1e-4, gt=0, description="peak learning rate (OneFormer / TAO: 1e-4; backbone x backbone_lr_scale)"
    )


class UniversalTrainSpec(TrainSpec):
    batch_size: int = Field(
        16, ge=1, description="images per device per step (oneformer: >= 2 for the contrastive loss)"
    )
    optimizer: UniversalOptimizerSpec = Field(default_factory=UniversalOptimizerSpec)
    grad_clip: float | None = Field(1.0, gt=0, description="clip the full model's gradient norm to this value")


class UniversalEvaluateSpec(EvaluateSpec):
    batch_size: int = Field(8, ge=1, description="images per step")
    tasks: list[Task] = Field(
        ["panoptic", "semantic", "instance"],
        min_length=1,
        description="evaluated tasks: panoptic (PQ / SQ / RQ), semantic (mIoU), instance (mask AP)",
    )


class UniversalPredictSpec(PredictSpec):
    batch_size: int = Field(8, ge=1, description="images per step")
    task: Task = Field("panoptic", description="semantic: index masks; instance: COCO results JSON; panoptic: PNG+JSON")
    score_threshold: float = Field(0.5, ge=0, le=1, description="instance: keep predictions scoring above this")


class UniversalExportSpec(ExportSpec):
    task: Task | None = Field(
        None, description="fix the task in the graph (input images only); null: oneformer graphs take task_tokens"
    )


class UniversalSpec(RunSpec):
    """Spec of ``vfm universal train|evaluate|predict|export`` (alias ``vfm oneformer``)."""

    task: Literal["universal"] = Field("universal", description="the task this spec is for")

    example: ClassVar[dict] = {
        "dataset": {
            "format": "coco_panoptic",
            "train": {"images": "data/train2017", "annotations": "data/annotations/panoptic_train2017.json"},
            "val": {"images": "data/val2017", "annotations": "data/annotations/panoptic_val2017.json"},
        }
    }
    """Values ``vfm spec init`` writes for the required keys."""

    model: UniversalModelSpec = Field(default_factory=UniversalModelSpec)
    dataset: UniversalDataSpec
    train: UniversalTrainSpec = Field(default_factory=UniversalTrainSpec)
    evaluate: UniversalEvaluateSpec = Field(default_factory=UniversalEvaluateSpec)
    predict: UniversalPredictSpec = Field(default_factory=UniversalPredictSpec)
    export: UniversalExportSpec = Field(default_factory=UniversalExportSpec)

    @model_validator(mode="after")
    def _check_export_task(self) -> UniversalSpec:
        if self.model.head == "mask2former" and self.export.task is not None:
            raise ValueError("export.task fixes the task token of a oneformer graph; mask2former has none (set null)")
        return self

    def task_probabilities(self) -> dict[str, float]:
        """The training task probabilities: ``dataset.task_prob``, or the default for this head and format."""
        if self.dataset.task_prob is not None:
            return self.dataset.task_prob.as_dict()
        if self.dataset.format == "semantic_masks":
            return {"semantic": 1.0, "instance": 0.0, "panoptic": 0.0}
        if self.dataset.format == "coco_instances":  # things only, most pixels unannotated
            return {"semantic": 0.0, "instance": 1.0, "panoptic": 0.0}
        if self.model.head == "mask2former":
            return {"semantic": 0.0, "instance": 0.0, "panoptic": 1.0}
        return TaskProbSpec().as_dict()
