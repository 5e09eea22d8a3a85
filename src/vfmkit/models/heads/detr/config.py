"""Configuration of the DETR family and its two presets, with TAO's field names.

``rtdetr`` follows TAO's RT-DETR defaults (tao-reference §2.3): 3 levels at strides 8/16/32, 300 queries, the light
hybrid encoder (one AIFI layer on the stride-32 level, CCFM fusion), varifocal loss (alpha 0.75, gamma 2), content
queries taken from the selected encoder tokens. ``dino`` follows TAO's DINO (§2.2): 4 levels (strides 8/16/32 and a
stride-64 level made by a stride-2 conv), 900 queries, 6 deformable encoder layers, FFN 2048, focal loss (alpha
0.25), learned content queries. Both: two-stage query selection, iterative box refinement, contrastive denoising
(``dn_number`` 100, label noise 0.5, box noise 1.0) and the matching / loss weights class 2 / L1 5 / GIoU 2 (the
classification loss weight is 1 for RT-DETR's varifocal loss and 2 for DINO's focal loss, as TAO).

The light family ``lw-n`` / ``lw-s`` / ``lw-m`` follows LW-DETR / RF-DETR (nano / small / medium): one stride-16 level
from the multi-layer projector neck (``projector``: blocks 3/6/9/12 of the ViT concatenated and projected; P3 + P5
optional through ``feat_strides``), **no encoder**, a deformable decoder of 2 / 3 / 4 layers with 2 sampling points,
300 queries, two-stage query selection with learned content queries, the IoU-aware classification loss (IA-BCE:
positives' target ``p**alpha * IoU**(1 - alpha)``, alpha 0.25; negatives weighted by ``p**2``) and, training only,
Group DETR (13 groups of queries, each matched one-to-one, together one-to-many) without denoising (``dn_number``
0; it can be turned on). Inputs 384 / 512 / 576 px.

Shared simplifications (every preset): query positions are RT-DETR's MLP of the reference box (DINO uses an MLP of
its sine embedding); batches are never padded (images of a batch share one size), so there are no padding masks or
valid ratios; per-layer class and box heads are not shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from vfmkit.errors import VfmError


@dataclass
class DetrConfig:
    """Architecture of a :class:`~vfmkit.models.heads.detr.detector.DETRDetector`.

    Attributes:
        num_classes: C, object classes (sigmoid scores; there is no background class).
        hidden_dim: width of the encoder, queries and decoder.
        num_queries: object queries (top-k encoder proposals in two-stage mode).
        num_select: detections kept by the post-processing (top-k over queries x classes).
        nheads: attention heads (self-attention and deformable attention).
        enc_layers: encoder layers (hybrid: AIFI layers; deformable: MSDeformAttn layers).
        dec_layers: decoder layers.
        dim_feedforward: FFN width of encoder and decoder layers.
        dropout: dropout in attention and FFN blocks.
        enc_n_points: deformable encoder: sampling points per head and level.
        dec_n_points: decoder cross-attention: sampling points per head and level.
        num_feature_levels: levels the decoder attends to; levels beyond ``feat_strides`` are made by stride-2 convs.
        feat_strides: strides of the feature-source levels used (e.g. (8, 16, 32) of a 4/8/16/32 neck).
        encoder: ``hybrid`` (RT-DETR: AIFI + CCFM), ``deformable`` (DINO: MSDeformAttn layers) or ``none`` (the light
            presets: the decoder reads the projected levels directly).
        use_encoder_idx: hybrid encoder: indices of the levels AIFI runs on.
        csp_blocks: hybrid encoder: RepVGG blocks per CCFM fusion block (RT-DETR: 3 x depth_mult).
        expansion: hybrid encoder: hidden width ratio of the CSP fusion blocks.
        two_stage: queries from the top-k encoder proposals (False: learned reference boxes).
        learnt_init_query: learned content queries (DINO) instead of the selected encoder features (RT-DETR).
        dn_number: contrastive denoising queries per image (0: off); grouped by the largest target count.
        dn_label_noise_ratio: denoising: labels flipped with probability ratio / 2.
        dn_box_noise_scale: denoising: box corner noise relative to half the box size.
        aux_loss: return the outputs of every decoder layer for deep supervision.
        group_detr: training only: groups of ``num_queries`` queries (Group DETR), each with its own two-stage
            selection heads, hidden from each other in self-attention and matched one-to-one; 1 = off. Inference uses
            the first group.
        norm: 2-D norm of the projections and conv blocks: ``gn`` (batch-size independent) or ``bn`` (RT-DETR).
    """

    num_classes: int
    hidden_dim: int = 256
    num_queries: int = 300
    num_select: int = 300
    nheads: int = 8
    enc_layers: int = 1
    dec_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.0
    enc_n_points: int = 4
    dec_n_points: int = 4
    num_feature_levels: int = 3
    feat_strides: tuple[int, ...] = (8, 16, 32)
    encoder: Literal["hybrid", "deformable", "none"] = "hybrid"
    use_encoder_idx: tuple[int, ...] = (2,)
    csp_blocks: int = 3
    expansion: float = 1.0
    two_stage: bool = True
    learnt_init_query: bool = False
    dn_number: int = 100
    dn_label_noise_ratio: float = 0.5
    dn_box_noise_scale: float = 1.0
    aux_loss: bool = True
    group_detr: int = 1
    norm: Literal["gn", "bn"] = "gn"

    def __post_init__(self) -> None:
        self.feat_strides = tuple(int(s) for s in self.feat_strides)
        self.use_encoder_idx = tuple(int(i) for i in self.use_encoder_idx)
        problems = []
        if self.num_classes < 1:
            problems.append(f"num_classes must be >= 1, got {self.num_classes}")
        if self.hidden_dim % self.nheads or self.hidden_dim % 4:
            problems.append(f"hidden_dim {self.hidden_dim} must be divisible by nheads {self.nheads} and by 4")
        if self.num_feature_levels < len(self.feat_strides):
            problems.append(f"num_feature_levels {self.num_feature_levels} < {len(self.feat_strides)} feat_strides")
        if self.encoder not in ("hybrid", "deformable", "none"):
            problems.append(f"encoder must be hybrid, deformable or none, got {self.encoder!r}")
        if self.group_detr < 1:
            problems.append(f"group_detr must be >= 1, got {self.group_detr}")
        if self.group_detr > 1 and not self.two_stage:
            problems.append("group_detr > 1 needs two_stage (each group has its own query selection)")
        bad = [i for i in self.use_encoder_idx if not 0 <= i < self.num_feature_levels and self.encoder == "hybrid"]
        if bad:
            problems.append(f"use_encoder_idx {list(bad)} outside the {self.num_feature_levels} levels")
        if self.num_select < 1 or self.num_queries < 1 or self.dec_layers < 1:
            problems.append("num_queries, num_select and dec_layers must be >= 1")
        if problems:
            raise VfmError("DETR config: " + "; ".join(problems))


@dataclass
class DetrLossConfig:
    """Set-criterion settings (see :class:`vfmkit.models.losses.detr.DetrCriterion`)."""

    cls_loss: Literal["vfl", "focal", "ia_bce"] = "vfl"
    focal_alpha: float = 0.75
    focal_gamma: float = 2.0
    cls_loss_coef: float = 1.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    set_cost_class: float = 2.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0


@dataclass(frozen=True)
class DetrPreset:
    """A named default: architecture fields and loss fields (both overridable), the input side and the neck."""

    model: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    resolution: int = 640
    neck: str = "simple_pyramid"


def _light(dec_layers: int, resolution: int) -> DetrPreset:
    """A light (LW-DETR / RF-DETR) size: decoder depth and input side."""
    return DetrPreset(
        model={
            "num_queries": 300,
            "num_feature_levels": 1,
            "feat_strides": (16,),
            "encoder": "none",
            "enc_layers": 0,
            "dec_layers": dec_layers,
            "dec_n_points": 2,
            "dim_feedforward": 1024,
            "learnt_init_query": True,
            "dn_number": 0,
            "group_detr": 13,
        },
        loss={"cls_loss": "ia_bce", "focal_alpha": 0.25, "cls_loss_coef": 1.0},
        resolution=resolution,
        neck="projector",
    )


DETR_PRESETS: dict[str, DetrPreset] = {
    "rtdetr": DetrPreset(
        model={
            "num_queries": 300,
            "num_feature_levels": 3,
            "feat_strides": (8, 16, 32),
            "encoder": "hybrid",
            "enc_layers": 1,
            "use_encoder_idx": (2,),
            "dim_feedforward": 1024,
            "learnt_init_query": False,
        },
        loss={"cls_loss": "vfl", "focal_alpha": 0.75, "cls_loss_coef": 1.0},
    ),
    "dino": DetrPreset(
        model={
            "num_queries": 900,
            "num_feature_levels": 4,
            "feat_strides": (8, 16, 32),
            "encoder": "deformable",
            "enc_layers": 6,
            "dim_feedforward": 2048,
            "learnt_init_query": True,
        },
        loss={"cls_loss": "focal", "focal_alpha": 0.25, "cls_loss_coef": 2.0},
    ),
    "lw-n": _light(2, 384),
    "lw-s": _light(3, 512),
    "lw-m": _light(4, 576),
}

_MODEL_KEYS = {f.name for f in fields(DetrConfig)}
_LOSS_KEYS = {f.name for f in fields(DetrLossConfig)}


def detr_preset(head: str, num_classes: int, **overrides: Any) -> tuple[DetrConfig, DetrLossConfig]:
    """The preset ``head`` with ``overrides`` applied (None values keep the preset's value).

    Args:
        head: ``rtdetr``, ``dino``, ``lw-n``, ``lw-s`` or ``lw-m``.
        num_classes: C.
        **overrides: any :class:`DetrConfig` or :class:`DetrLossConfig` field. ``feat_strides`` without
            ``num_feature_levels`` sets the levels to the larger of the preset's and the strides' count.

    Raises:
        VfmError: unknown preset or field, or an inconsistent configuration.
    """
    if head not in DETR_PRESETS:
        raise VfmError(f"unknown DETR head {head!r}; choose one of {', '.join(DETR_PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - _MODEL_KEYS - _LOSS_KEYS - {"num_classes"})
    if unknown:
        raise VfmError(
            f"unknown DETR option(s) {unknown}; known: {sorted((_MODEL_KEYS | _LOSS_KEYS) - {'num_classes'})}"
        )
    preset = DETR_PRESETS[head]
    model = {**preset.model, **{k: v for k, v in overrides.items() if k in _MODEL_KEYS}, "num_classes": num_classes}
    if "feat_strides" in overrides and "num_feature_levels" not in overrides:
        model["num_feature_levels"] = max(preset.model["num_feature_levels"], len(overrides["feat_strides"]))
    loss = {**preset.loss, **{k: v for k, v in overrides.items() if k in _LOSS_KEYS}}
    return DetrConfig(**model), DetrLossConfig(**loss)
