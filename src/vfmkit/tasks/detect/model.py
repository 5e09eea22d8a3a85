"""The detection model of a spec, and its exportable form (TAO's graph names: ``inputs`` -> ``pred_logits``,
``pred_boxes``; with ``export.postprocess`` also ``orig_sizes`` -> ``boxes``, ``scores``, ``labels``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vfmkit.errors import ConfigurationError, VfmError
from vfmkit.models.backbones.timm_cnn import is_timm_cnn_name
from vfmkit.models.heads.detr import DETR_PRESETS, DETRDetector, build_criterion, build_detector, detr_preset
from vfmkit.models.losses.detr import DetrCriterion
from vfmkit.tasks.detect.postprocess import postprocess_detections
from vfmkit.tasks.detect.spec import DetectModelSpec, DetectSpec
from vfmkit.weights.rule import loader_arguments

HEAD_FIELDS = (
    "num_queries",
    "num_select",
    "hidden_dim",
    "nheads",
    "enc_layers",
    "dec_layers",
    "dim_feedforward",
    "dropout",
    "enc_n_points",
    "dec_n_points",
    "num_feature_levels",
    "two_stage",
    "learnt_init_query",
    "dn_number",
    "dn_label_noise_ratio",
    "dn_box_noise_scale",
    "aux_loss",
    "group_detr",
    "feat_strides",
)
"""``model.*`` fields passed to the DETR preset as overrides (null keeps the preset's value)."""

INPUT_NAMES = ("inputs",)
POSTPROCESS_INPUT_NAMES = ("inputs", "orig_sizes")
OUTPUT_NAMES = ("pred_logits", "pred_boxes")
POSTPROCESS_OUTPUT_NAMES = ("pred_logits", "pred_boxes", "boxes", "scores", "labels")


def build_model(
    model: DetectModelSpec, num_classes: int, pretrained: bool | None = None
) -> tuple[DETRDetector, DetrCriterion]:
    """The detector and criterion of ``spec.model`` for ``num_classes`` (derived from the data).

    Args:
        model: the ``model`` section.
        num_classes: C.
        pretrained: None or True: every backbone's weights as the spec says (``model.pretrained`` /
            ``model.backbone_checkpoint``, ``model.frozen_fm.*``); False: none (a checkpoint that holds them is loaded
            next, or a dry build): no checkpoint file is read. A timm CNN gets the BatchNorm layout of its weights
            either way (frozen when ``model.pretrained``).

    Raises:
        VfmError / ModelNotFoundError / WeightsError: unknown backbone, bad options, unusable weights.
    """
    overrides = head_overrides(model)
    fm = model.frozen_fm
    _check_windows(model)
    load = pretrained is not False
    main = loader_arguments(model.backbone, model.pretrained, model.backbone_checkpoint, load)
    fm_pretrained, fm_checkpoint = loader_arguments(fm.backbone, fm.pretrained, fm.checkpoint, load)
    _check_light_head(model)
    return build_detector(
        num_classes,
        head=model.head,
        backbone=model.backbone,
        neck=model.neck,
        neck_channels=model.neck_channels,
        pretrained=main[0],
        backbone_checkpoint=main[1],
        freeze_backbone=model.freeze_backbone,
        neck_options={"summary_fusion": model.summary_fusion},
        frozen_fm=fm.backbone if fm.enabled else None,
        frozen_fm_input_scale=fm.input_scale,
        frozen_fm_pretrained=fm_pretrained,
        frozen_fm_checkpoint=fm_checkpoint,
        vitdet_window_size=model.vitdet_window_size,
        freeze_norm=model.pretrained if is_timm_cnn_name(model.backbone) else None,
        patch_size=model.patch_size,
        **overrides,
    )


def _check_windows(model: DetectModelSpec) -> None:
    """``model.vitdet_window_size`` and ``model.patch_size`` are for foundation ViTs (not timm CNNs); windows need a
    neck that runs the backbone whole (simple pyramid or projector)."""
    for key, value in (("vitdet_window_size", model.vitdet_window_size), ("patch_size", model.patch_size)):
        if value and is_timm_cnn_name(model.backbone):
            raise ConfigurationError(f"model.{key} applies to foundation ViT backbones, not {model.backbone}")
    if model.vitdet_window_size and model.neck == "vit_adapter":
        raise ConfigurationError(
            "model.vitdet_window_size needs model.neck=simple_pyramid or projector (the ViT-Adapter runs the "
            "backbone's blocks one by one, which windowed attention does not allow)"
        )


def _check_light_head(model: DetectModelSpec) -> None:
    """The light presets have no encoder: the frozen foundation model's extra level would feed nothing."""
    if model.frozen_fm.enabled and DETR_PRESETS[model.head].model.get("encoder") == "none":
        raise ConfigurationError(
            f"model.frozen_fm.enabled needs an encoder to fuse its level into; model.head={model.head} has none "
            "(use rtdetr or dino, or disable the frozen foundation model)"
        )


def head_overrides(model: DetectModelSpec) -> dict[str, Any]:
    """The ``model.*`` head and ``model.loss.*`` fields given to the DETR preset (None keeps the preset's value)."""
    return {**{name: getattr(model, name) for name in HEAD_FIELDS}, **model.loss.model_dump()}


def build_task_model(spec: DetectSpec, meta: dict[str, Any], pretrained: bool) -> DETRDetector:
    """The detector of a spec over ``meta["classes"]`` (what the engine builds, trains and reloads).

    Args:
        spec: the detect spec.
        meta: task facts; ``classes`` (names in label order) sets C.
        pretrained: True loads weights as the spec says (``model.pretrained`` / ``backbone_checkpoint`` for the
            main backbone, ``model.frozen_fm.*`` for the frozen foundation model); False loads none (a checkpoint
            that holds them is loaded next, or a dry build on the meta device).

    Raises:
        ConfigurationError: a DETR option (naming the ``model.*`` key), or ``dataset.augment.multi_scales`` the main
            backbone cannot take (``model.resolution`` is checked by the engine).
    """
    num_classes = len(meta["classes"])
    try:
        detr_preset(spec.model.head, num_classes, **head_overrides(spec.model))
    except VfmError as err:  # the DETR fields are the spec's model.* fields (TAO names)
        raise ConfigurationError(f"model ({spec.model.head} head): {err}") from None
    detector, _ = build_model(spec.model, num_classes, pretrained=None if pretrained else False)
    if spec.dataset.augment.multi_scales:
        check_sizes(spec.dataset.augment.multi_scales, detector, "dataset.augment.multi_scales")
    return detector


def build_task_criterion(model: DetectModelSpec, num_classes: int) -> DetrCriterion:
    """The set criterion of ``spec.model`` (the preset's loss with the ``model.loss.*`` overrides)."""
    config, loss = detr_preset(model.head, num_classes, **head_overrides(model))
    return build_criterion(config, loss)


def check_sizes(sizes: Sequence[int], detector: DETRDetector, key: str) -> None:
    """Every input side in ``sizes`` must be a multiple of the main backbone's resolution step (its patch size; the
    coarsest stride of a timm CNN). Other sides work (levels are ceil(side / stride)), not exactly aligned.

    Raises:
        ConfigurationError: naming ``key`` and the nearest valid values.
    """
    step = main_backbone_step(detector)
    bad = [size for size in sizes if size % step]
    if bad:
        size = bad[0]
        lower, upper = max(step, size // step * step), (size // step + 1) * step
        raise ConfigurationError(
            f"{key}: {size} is not a multiple of {step} (the main backbone's patch size / stride); use {lower} or "
            f"{upper}"
        )


def main_backbone_step(detector: DETRDetector) -> int:
    """The resolution step of the main backbone (a foundation model's patch size, the coarsest stride of a timm
    CNN)."""
    source = detector.source
    backbone = source.backbone if hasattr(source, "backbone") else source
    return int(backbone.preprocessing.resolution_step)


class ExportableDetector(nn.Module):
    """The detector as a graph of tensors in and out.

    Args:
        detector: the trained detector (exported in eval mode).
        postprocess: also return the top-k detections in pixels (needs the ``orig_sizes`` input).
        category_ids: original category id per label, baked into the graph for the ``labels`` output.
        num_select: detections per image of the post-processing (default: the detector's ``num_select``).
    """

    def __init__(
        self,
        detector: DETRDetector,
        postprocess: bool = False,
        category_ids: Sequence[int] | None = None,
        num_select: int | None = None,
    ):
        super().__init__()
        self.detector = detector
        self.postprocess = postprocess
        self.num_select = int(num_select or detector.config.num_select)
        ids = list(category_ids) if category_ids is not None else list(range(detector.config.num_classes))
        self.register_buffer("category_ids", torch.tensor(ids, dtype=torch.int64), persistent=False)

    @property
    def input_names(self) -> tuple[str, ...]:
        return POSTPROCESS_INPUT_NAMES if self.postprocess else INPUT_NAMES

    @property
    def output_names(self) -> tuple[str, ...]:
        return POSTPROCESS_OUTPUT_NAMES if self.postprocess else OUTPUT_NAMES

    def forward(self, inputs: torch.Tensor, orig_sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """inputs (B, 3, H, W) float RGB in [0, 1] [, orig_sizes (B, 2) int64 (height, width)] ->
        ``pred_logits`` (B, Q, C), ``pred_boxes`` (B, Q, 4) cxcywh normalised [, ``boxes`` (B, K, 4) xyxy pixels of
        ``orig_sizes``, ``scores`` (B, K), ``labels`` (B, K) int64 original category ids]."""
        out = self.detector(inputs)
        logits, boxes = out["pred_logits"], out["pred_boxes"]
        if not self.postprocess:
            return logits, boxes
        if orig_sizes is None:
            raise ValueError("the post-processing graph needs orig_sizes (B, 2) (height, width)")
        return (logits, boxes, *postprocess_detections(logits, boxes, orig_sizes, self.num_select, self.category_ids))
