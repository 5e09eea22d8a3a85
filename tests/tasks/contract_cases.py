"""Per task (and variant): generated data and tiny-model overrides for the task contract test.

A new task registers itself in ``vfmkit.tasks`` and adds one :class:`ContractCase` here (the contract test fails
until it does); everything else the contract checks comes from the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.synthetic import make_segmentation_dataset, make_shapes_dataset, save_tiny_radio_checkpoint
from tests.tasks.change.change_data import make_golden_csv, make_levir
from tests.tasks.clip.clip_data import write_caption_folders
from tests.tasks.detect.detect_data import make_detection_dataset
from tests.tasks.distill.distill_data import make_pattern_dataset
from tests.tasks.universal.universal_data import CATEGORIES, make_panoptic_dataset, split_paths

PALETTE = "[{name: background, id: 0}, {name: circle, id: 1}, {name: square, id: 2}]"
COMMON = ["train.num_workers=0", "train.epochs=2", "train.batch_size=4", "evaluate.batch_size=4"]


@dataclass
class ContractCase:
    """How to run one task variant on tiny generated data.

    Attributes:
        task: the registered task name.
        variant: the variant (``None`` for single-variant tasks).
        data: makes the dataset under a folder and returns its overrides (dataset.* and task-specific model.*).
        predict: makes (or points at) prediction inputs under a folder: (overrides, number of inputs).
        frozen: overrides that freeze the backbone (the neck and head still train).
        backbone_key: the spec key of the backbone.
        extra: more overrides (small widths, resolution).
        config: overrides that make a valid spec without any data on disk (for model-building tests).
        heads: the model choices to build every registered backbone with (necks, modes ...), one override list each.
        meta: the task facts a model is built from (class names ...).
    """

    task: str
    variant: str | None
    data: Callable[[Path], list[str]]
    predict: Callable[[Path], tuple[list[str], int]]
    frozen: list[str] = field(default_factory=lambda: ["model.freeze_backbone=true"])
    backbone_key: str = "model.backbone"
    extra: list[str] = field(default_factory=list)
    config: list[str] = field(default_factory=list)
    heads: list[list[str]] = field(default_factory=lambda: [[]])
    meta: dict = field(default_factory=lambda: {"classes": ["a", "b", "c"]})


def _classify_data(root: Path) -> list[str]:
    make_shapes_dataset(root, {"train": 3, "val": 2}, size=32)
    return [f"dataset.root={root}"]


def _classify_predict(root: Path) -> tuple[list[str], int]:
    return [f"predict.source={root / 'val'}"], 8


def _segment_data(root: Path) -> list[str]:
    make_segmentation_dataset(root, {"train": 6, "val": 3}, size=32)
    return [f"dataset.root={root}", f"dataset.palette={PALETTE}", "dataset.augment.scale_range=[0.75, 1.25]"]


def _segment_predict(root: Path) -> tuple[list[str], int]:
    return [f"predict.source={root / 'images' / 'val'}"], 3


def _levir_data(root: Path) -> list[str]:
    make_levir(root, {"train": 6, "val": 3}, size=32)
    return [f"dataset.root={root}"]


def _levir_predict(root: Path) -> tuple[list[str], int]:
    return [f"predict.source={root}"], 9  # every pair under A/ and B/


def _golden_data(root: Path) -> list[str]:
    make_golden_csv(root, {"train": 6, "val": 4}, size=32)
    return [
        "dataset.format=csv",
        f"dataset.train_csv={root / 'train.csv'}",
        f"dataset.val_csv={root / 'val.csv'}",
        "dataset.light_conditions=[_L0,_L1]",
        "model.neck=simple_pyramid",
    ]


def _golden_predict(root: Path) -> tuple[list[str], int]:
    return [f"predict.source={root / 'val.csv'}"], 4


def _distill_data(root: Path) -> list[str]:
    data = make_pattern_dataset(root, {"train": 1, "val": 1})  # 16 + 16 images, 4 pattern classes
    teacher = save_tiny_radio_checkpoint(root / "teacher.pth.tar", noise=0.5, seed=1)
    return [
        f"dataset.train_nolabel.folder_path={data.unlabeled}",
        f"dataset.knn_validation.root={data.by_pattern}",
        f"dataset.control.root={data.by_colour}",
        f"distill.teacher=[{{backbone: {teacher}, name: tiny, mode: combo}}]",
    ]


def _distill_predict(root: Path) -> tuple[list[str], int]:
    return [f"predict.source={root / 'images' / 'val'}"], 16


DISTILL_TEACHER = "{backbone: test-radio-v2-tiny, pretrained: false, name: tiny"


def _universal_data(root: Path) -> list[str]:
    make_panoptic_dataset(root, {"train": 6, "val": 3}, size=32)
    overrides = []
    for split in ("train", "val"):
        images, annotations, _ = split_paths(root, split)
        overrides += [f"dataset.{split}.images={images}", f"dataset.{split}.annotations={annotations}"]
    return overrides


def _universal_predict(root: Path) -> tuple[list[str], int]:
    return [f"predict.source={root / 'images' / 'val'}"], 3


UNIVERSAL = [
    "model.resolution=32",
    "model.neck_channels=16",
    "model.num_object_queries=6",
    "model.hidden_dim=16",
    "model.nheads=2",
    "model.dim_feedforward=32",
    "model.dec_layers=2",
    "model.pixel_decoder.transformer_enc_layers=1",
    "model.pixel_decoder.conv_dim=16",
    "model.pixel_decoder.mask_dim=16",
    "model.pixel_decoder.dim_feedforward=32",
    "model.pixel_decoder.norm=ln",  # GroupNorm of 16 channels has 1 value per group on the 1x1 map of stride 32
    "model.text_encoder.width=16",
    "model.text_encoder.num_layers=1",
    "model.text_encoder.context_length=8",
    "model.text_encoder.n_ctx=2",
    "model.train_num_points=64",
]
"""A tiny OneFormer (the default head) at 32 px."""


def _clip_data(root: Path) -> list[str]:
    overrides = []
    for split, seed in (("train", 0), ("val", 1)):
        images, captions = write_caption_folders(root / split, per_combination=1, seed=seed)
        overrides += [f"dataset.{split}.image_dir={images}", f"dataset.{split}.caption_dir={captions}"]
    return overrides


def _clip_predict(root: Path) -> tuple[list[str], int]:
    texts = root / "texts.txt"
    texts.write_text("a red circle\na blue cross\n")
    return [f"predict.source={root / 'val' / 'images'}", f"predict.text_file={texts}"], 12 + 2


DENSE = ["model.resolution=32", "model.neck_channels=16", "model.decoder_channels=16"]
NECKS_NAMES = ("vit_adapter", "simple_pyramid")
NECKS = [[f"model.neck={neck}"] for neck in NECKS_NAMES]


def _detect_data(root: Path) -> list[str]:
    train = make_detection_dataset(root / "train", num_images=6, size=64, seed=0)
    val = make_detection_dataset(root / "val", num_images=3, size=64, seed=1, negatives=1)
    return [
        f"dataset.train_data_sources=[{{image_dir: {train[0]}, json_file: {train[1]}}}]",
        f"dataset.val_data_sources=[{{image_dir: {val[0]}, json_file: {val[1]}}}]",
    ]


def _detect_predict(root: Path) -> tuple[list[str], int]:
    return [f"predict.source={root / 'val' / 'images'}", "predict.conf_threshold=0.0"], 3


DETECT_FM = ["model.frozen_fm.enabled=true", "model.frozen_fm.backbone=test-radio-v3-tiny"]
DETECT_TINY = [
    "model.resolution=64",
    "model.hidden_dim=32",
    "model.nheads=2",
    "model.num_queries=10",
    "model.num_select=10",
    "model.dec_layers=1",
    "model.dim_feedforward=32",
    "model.dn_number=4",
]
DETECT_HEADS = [
    [f"model.head={head}", f"model.neck={neck}", *([] if (head, neck) != ("dino", "simple_pyramid") else DETECT_FM)]
    for head in ("rtdetr", "dino")
    for neck in NECKS_NAMES
]
"""Both presets on both necks; one of them with the frozen foundation-model branch beside the main backbone."""
DETECT_LIGHT_HEADS = [["model.head=lw-n"], ["model.head=lw-m", "model.feat_strides=[8,16,32]", "model.group_detr=2"]]
"""The light presets: P4 only (the default) and P3 + P4 + P5."""
GOLDEN = ["dataset.format=csv", "dataset.train_csv=none.csv"]

CASES: dict[tuple[str, str | None], ContractCase] = {
    # keyed (task, variant) for the registered variants; a second case of a task (another head family) adds its own
    # name as the key's second part, its ContractCase keeps the task's real variant
    ("classify", None): ContractCase(
        "classify",
        None,
        _classify_data,
        _classify_predict,
        frozen=["model.mode=linear_probe"],
        extra=["model.resolution=32", "model.head_dropout=0.1"],
        config=["dataset.root=none"],
        heads=[["model.mode=linear_probe"], ["model.mode=partial"], ["model.mode=finetune"]],
    ),
    ("segment", None): ContractCase(
        "segment",
        None,
        _segment_data,
        _segment_predict,
        extra=DENSE,
        config=["dataset.root=none", f"dataset.palette={PALETTE}"],
        heads=NECKS,
    ),
    ("change", "segment"): ContractCase(
        "change",
        "segment",
        _levir_data,
        _levir_predict,
        extra=DENSE,
        config=["dataset.root=none"],
        heads=NECKS,
        meta={"classes": ["unchanged", "changed"]},
    ),
    ("change", "classify"): ContractCase(
        "change",
        "classify",
        _golden_data,
        _golden_predict,
        extra=[*DENSE, "model.classifier_hidden=8"],
        config=GOLDEN,
        heads=[[*neck, f"model.difference={d}"] for neck in NECKS for d in ("learnable", "euclidean")],
        meta={"classes": ["PASS", "FAIL"]},
    ),
    ("detect", None): ContractCase(
        "detect",
        None,
        _detect_data,
        _detect_predict,
        extra=DETECT_TINY,
        config=["dataset.train_data_sources=[{image_dir: none, json_file: none.json}]"],
        heads=DETECT_HEADS,
        meta={"classes": ["circle", "square", "triangle"], "category_ids": [1, 3, 7]},
    ),
    ("detect", "light"): ContractCase(  # the light LW-DETR presets (projector neck, no encoder, Group DETR)
        "detect",
        None,
        _detect_data,
        _detect_predict,
        extra=[*DETECT_TINY, "model.head=lw-n", "model.group_detr=2"],
        config=["dataset.train_data_sources=[{image_dir: none, json_file: none.json}]"],
        heads=DETECT_LIGHT_HEADS,
        meta={"classes": ["circle", "square", "triangle"], "category_ids": [1, 3, 7]},
    ),
    ("universal", None): ContractCase(
        "universal",
        None,
        _universal_data,
        _universal_predict,
        extra=UNIVERSAL,
        config=["dataset.train.images=none", "dataset.train.annotations=none.json"],
        heads=[[*neck, f"model.head={head}"] for neck in NECKS for head in ("mask2former", "oneformer")],
        meta={"categories": [{**c, "isthing": bool(c["isthing"])} for c in CATEGORIES], "format": "coco_panoptic"},
    ),
    ("clip", None): ContractCase(
        "clip",
        None,
        _clip_data,
        _clip_predict,
        frozen=["model.freeze_vision_encoder=true"],
        # a local RADIO checkpoint without adaptor heads as the image backbone of RADIO-CLIP's tiny text tower
        extra=["model.type=test-radio-clip-tiny", "model.projection=linear", "model.image_size=32"],
        config=["model.type=test-radio-clip-tiny"],
        heads=[["model.projection=native"], ["model.projection=linear"]],
        meta={},
    ),
    ("distill", None): ContractCase(
        "distill",
        None,
        _distill_data,
        _distill_predict,
        frozen=["model.trainable_blocks=0"],
        extra=["model.resolution=32", "distill.phi_s.freeze_after=2", "distill.phi_s.update_period=1"],
        config=["dataset.train_nolabel.folder_path=none", f"distill.teacher=[{DISTILL_TEACHER}}}]"],
        heads=[  # the contract's main run covers the v2 feature head
            [f"distill.teacher=[{DISTILL_TEACHER}, mode: combo, spatial_mlp_version: attn}}]"],
            [f"distill.teacher=[{DISTILL_TEACHER}, mode: summary}}]", "model.trainable_blocks=1"],
        ],
        meta={"teachers": ["tiny"]},
    ),
}
