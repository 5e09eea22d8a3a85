"""Test helpers of the universal-segmentation tests: the tiny model's spec overrides and the dataset overrides of
generated data."""

from __future__ import annotations

from pathlib import Path

from tests.tasks.universal.universal_data import split_paths

TINY = [
    "model.backbone=test-radio-v2-tiny",
    "model.resolution=64",
    "model.neck_channels=48",
    "model.num_object_queries=12",
    "model.hidden_dim=48",
    "model.nheads=4",
    "model.dim_feedforward=96",
    "model.dec_layers=4",
    "model.pixel_decoder.conv_dim=48",
    "model.pixel_decoder.mask_dim=48",
    "model.pixel_decoder.transformer_enc_layers=1",
    "model.pixel_decoder.dim_feedforward=96",
    "model.text_encoder.width=32",
    "model.text_encoder.num_layers=1",
    "model.text_encoder.context_length=16",
    "model.text_encoder.n_ctx=4",
    "model.train_num_points=256",
]
"""A tiny model at 64 px: test-radio-v2-tiny -> simple pyramid (48 ch) -> a 12-query, 4-prediction head."""

NO_AUGMENT = ["dataset.augment.scale_range=null", "dataset.augment.hflip=0"]

QUIET = ["train.num_workers=0", "exist_ok=true"]


def panoptic_overrides(root: Path, train_json: Path | None = None, val: str | None = "val") -> list[str]:
    """``dataset.*`` overrides of a :func:`make_panoptic_dataset` folder (``train_json``: another training JSON over
    the train split's images and PNGs; ``val``: the split used for validation, None for none)."""
    images, annotations, pngs = split_paths(root, "train")
    out = [
        f"dataset.train.images={images}",
        f"dataset.train.annotations={train_json or annotations}",
        f"dataset.train.panoptic={pngs}",
    ]
    if val is not None:
        images, annotations, pngs = split_paths(root, val)
        out += [
            f"dataset.val.images={images}",
            f"dataset.val.annotations={annotations}",
            f"dataset.val.panoptic={pngs}",
        ]
    return out


def optimizer_overrides(lr: float, epochs: int) -> list[str]:
    """AdamW at ``lr`` on every parameter (backbone included), weight decay 1e-4, 10% warmup then cosine."""
    return [
        f"train.optimizer.lr={lr}",
        "train.optimizer.weight_decay=1e-4",
        "train.optimizer.backbone_lr_scale=1",
        "train.optimizer.layer_decay=1",
        f"train.scheduler.warmup_epochs={0.1 * epochs:g}",
        f"train.epochs={epochs}",
    ]
