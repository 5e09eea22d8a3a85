"""The detection model of a spec, and its exportable form (TAO's graph names: ``inputs`` -> ``pred_logits``,
``pred_boxes``; with ``export.postprocess`` also ``orig_sizes`` -> ``boxes``, ``scores``, ``labels``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vfmkit.models.heads.detr import DETRDetector, build_detector
from vfmkit.models.losses.detr import DetrCriterion
from vfmkit.tasks.detect.postprocess import postprocess_detections
from vfmkit.tasks.detect.spec import DetectModelSpec

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
        pretrained: None: as the spec says (``model.pretrained``, ``model.frozen_fm.pretrained``); False: random
            init for both backbones (e.g. before loading a checkpoint that holds them); True: published weights.

    Raises:
        VfmError / ModelNotFoundError / WeightsError: unknown backbone, bad options, unusable weights.
    """
    overrides = {name: getattr(model, name) for name in HEAD_FIELDS}
    overrides.update(model.loss.model_dump())
    fm = model.frozen_fm
    return build_detector(
        num_classes,
        head=model.head,
        backbone=model.backbone,
        neck=model.neck,
        neck_channels=model.neck_channels,
        pretrained=model.pretrained if pretrained is None else pretrained,
        backbone_checkpoint=model.backbone_checkpoint,
        freeze_backbone=model.freeze_backbone,
        neck_options={"summary_fusion": model.summary_fusion},
        frozen_fm=fm.backbone if fm.enabled else None,
        frozen_fm_input_scale=fm.input_scale,
        frozen_fm_pretrained=fm.pretrained if pretrained is None else pretrained,
        frozen_fm_checkpoint=fm.checkpoint,
        **overrides,
    )


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
