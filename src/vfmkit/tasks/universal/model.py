"""The universal segmenter and its criterion built from a spec: backbone -> neck -> Mask2Former / OneFormer head."""

from __future__ import annotations

from vfmkit.models.factory import load_backbone
from vfmkit.models.heads.mask2former import UniversalHeadConfig, UniversalSegmenter
from vfmkit.models.losses.mask import MaskSetCriterion
from vfmkit.models.necks import build_neck
from vfmkit.tasks.universal.spec import UniversalModelSpec
from vfmkit.weights.rule import loader_arguments


def head_config(spec: UniversalModelSpec) -> UniversalHeadConfig:
    """The plain head configuration of a ``model`` spec section."""
    pixel, text = spec.pixel_decoder, spec.text_encoder
    return UniversalHeadConfig(
        head=spec.head,
        num_object_queries=spec.num_object_queries,
        hidden_dim=spec.hidden_dim,
        nheads=spec.nheads,
        dim_feedforward=spec.dim_feedforward,
        dec_layers=spec.dec_layers,
        pre_norm=spec.pre_norm,
        enforce_input_proj=spec.enforce_input_proj,
        dropout=spec.dropout,
        conv_dim=pixel.conv_dim,
        mask_dim=pixel.mask_dim,
        transformer_enc_layers=pixel.transformer_enc_layers,
        pixel_decoder_dim_feedforward=pixel.dim_feedforward,
        pixel_decoder_n_points=pixel.n_points,
        norm=pixel.norm,
        class_dec_layers=spec.class_dec_layers,
        use_task_norm=spec.use_task_norm,
        text_context_length=text.context_length,
        text_width=text.width,
        text_num_layers=text.num_layers,
        n_ctx=text.n_ctx,
        text_proj_num_layers=text.proj_num_layers,
        contrastive_temperature=spec.contrastive_temperature,
    )


def build_universal_model(spec: UniversalModelSpec, num_classes: int, pretrained: bool = True) -> UniversalSegmenter:
    """Backbone -> neck -> head.

    Args:
        spec: the ``model`` section.
        num_classes: K categories (the dataset's, contiguous).
        pretrained: True loads the backbone's weights as ``spec`` says (``pretrained``; a path loads its file);
            False loads none (a checkpoint is loaded afterwards).
    """
    load_pretrained, _ = loader_arguments(spec.backbone, spec.pretrained, None, pretrained)
    backbone = load_backbone(spec.backbone, pretrained=load_pretrained, vitdet_window_size=spec.vitdet_window_size)
    neck = build_neck(
        spec.neck,
        backbone,
        out_channels=spec.neck_channels,
        summary_fusion=spec.summary_fusion,
        freeze_backbone=spec.freeze_backbone,
    )
    return UniversalSegmenter(neck, num_classes, head_config(spec))


def build_criterion(spec: UniversalModelSpec, num_classes: int) -> MaskSetCriterion:
    """The set criterion with the spec's loss weights and point sampling."""
    return MaskSetCriterion(
        num_classes,
        class_weight=spec.class_weight,
        mask_weight=spec.mask_weight,
        dice_weight=spec.dice_weight,
        no_object_weight=spec.no_object_weight,
        contrastive_weight=spec.contrastive_weight,
        train_num_points=spec.train_num_points,
        oversample_ratio=spec.oversample_ratio,
        importance_sample_ratio=spec.importance_sample_ratio,
        deep_supervision=spec.deep_supervision,
    )
