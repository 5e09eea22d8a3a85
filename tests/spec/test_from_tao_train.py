"""Every TAO task's spec (tests/spec/tao_specs), converted by ``vfm spec from-tao`` with its data paths and a tiny
backbone given as ``key=value``, trains one epoch on generated data (the contract test's generators) through the
written vfmkit spec file. Two that repeat another's path are ``slow``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.synthetic import make_segmentation_dataset, make_shapes_dataset, save_tiny_radio_checkpoint
from tests.tasks.change.change_data import make_golden_csv, make_levir
from tests.tasks.clip.clip_data import write_caption_folders
from tests.tasks.contract_cases import DENSE, DETECT_TINY, PALETTE, UNIVERSAL
from tests.tasks.detect.detect_data import make_detection_dataset
from tests.tasks.distill.distill_data import make_pattern_dataset
from tests.tasks.universal.universal_data import make_panoptic_dataset, split_paths

from vfmkit import Task
from vfmkit.tao import convert_tao_file

SPECS = Path(__file__).parent / "tao_specs"
TINY = ["model.backbone=test-radio-v2-tiny", "model.pretrained=false"]
SMALL_RUN = [
    "train.epochs=1",
    "train.batch_size=4",
    "train.num_workers=0",
    "train.precision='32'",
    "train.devices=1",
    "train.strategy=auto",
    "evaluate.batch_size=4",
]
"""One epoch on the CPU in one process (the TAO specs ask for GPUs, bf16 and DDP)."""


def _classify(root: Path) -> list[str]:
    make_shapes_dataset(root, {"train": 3, "val": 2}, size=32)
    return [f"dataset.root={root}", *TINY, "model.resolution=32"]


def _student_distill(root: Path) -> list[str]:
    data = make_pattern_dataset(root, {"train": 1, "val": 1})
    teacher = save_tiny_radio_checkpoint(root / "teacher.pth.tar", noise=0.5, seed=1)
    return [
        f"dataset.train_nolabel.folder_path={data.unlabeled}",
        f"dataset.knn_validation.root={data.by_pattern}",
        f"distill.teacher.0.backbone={teacher}",
        "distill.teacher.0.pretrained_teacher_model_path=null",
        "distill.teacher.0.mlp_hidden_size=32",
        *TINY,
        "model.resolution=32",
        "distill.phi_s.freeze_after=2",
        "distill.phi_s.update_period=1",
    ]


def _radio_distill(root: Path) -> list[str]:
    data = make_pattern_dataset(root, {"train": 1, "val": 1})
    teacher = save_tiny_radio_checkpoint(root / "teacher.pth.tar", noise=0.5, seed=1)
    return [
        f"dataset.train_nolabel.folder_path={data.unlabeled}",
        f"dataset.knn_validation.root={data.by_pattern}",  # TAO's radio spec has no labelled split here
        f"distill.teacher.0.backbone={teacher}",
        "distill.teacher.0.input_size=32",
        "distill.teacher.1.backbone=test-radio-v3-tiny",
        "distill.teacher.1.pretrained=false",
        "distill.teacher.1.input_size=32",
        "train.activation_checkpointing=false",
        *TINY,
        "model.resolution=32",
        "distill.phi_s.freeze_after=2",
        "distill.phi_s.update_period=1",
    ]


def _detect(root: Path) -> list[str]:
    train = make_detection_dataset(root / "train", num_images=6, size=64, seed=0)
    val = make_detection_dataset(root / "val", num_images=3, size=64, seed=1, negatives=1)
    return [
        f"dataset.train_data_sources=[{{image_dir: {train[0]}, json_file: {train[1]}}}]",
        f"dataset.val_data_sources=[{{image_dir: {val[0]}, json_file: {val[1]}}}]",
        *TINY,
        *DETECT_TINY,
        "dataset.augment.multi_scales=null",
    ]


def _rtdetr(root: Path) -> list[str]:
    return [*_detect(root), "model.frozen_fm.backbone=test-radio-v3-tiny", "model.frozen_fm.pretrained=false"]


def _segment(root: Path) -> list[str]:
    make_segmentation_dataset(root, {"train": 6, "val": 3}, size=32)
    return [f"dataset.root={root}", f"dataset.palette={PALETTE}", "dataset.ignore_index=255", *TINY, *DENSE]


def _levir(root: Path) -> list[str]:
    make_levir(root, {"train": 6, "val": 3}, size=32)
    return [f"dataset.root={root}", *TINY, *DENSE]


def _golden(root: Path) -> list[str]:
    make_golden_csv(root, {"train": 6, "val": 4}, size=32)
    csvs = [f"dataset.train_csv={root / 'train.csv'}", f"dataset.val_csv={root / 'val.csv'}"]
    return [
        *csvs,
        f"dataset.image_root={root}",
        "model.neck=simple_pyramid",
        "model.classifier_hidden=8",
        *TINY,
        *DENSE,
    ]


def _universal(root: Path) -> list[str]:
    make_panoptic_dataset(root, {"train": 6, "val": 3}, size=32)
    overrides = [*TINY, *UNIVERSAL]
    for split in ("train", "val"):
        images, annotations, panoptic = split_paths(root, split)
        overrides += [f"dataset.{split}.images={images}", f"dataset.{split}.annotations={annotations}"]
        overrides.append(f"dataset.{split}.panoptic={panoptic}")
    return overrides


def _clip(root: Path) -> list[str]:
    overrides = ["model.type=test-radio-clip-tiny", "model.pretrained=false", "model.image_size=32"]
    for split, seed in (("train", 0), ("val", 1)):
        images, captions = write_caption_folders(root / split, per_combination=1, seed=seed)
        overrides += [f"dataset.{split}.image_dir={images}", f"dataset.{split}.caption_dir={captions}"]
    return overrides


CASES: dict[str, Callable[[Path], list[str]]] = {
    "classification_pyt": _classify,
    "visual_changenet_segment": _levir,
    "visual_changenet_classify": _golden,
    "segformer": _segment,
    "classification_pyt_distill": _student_distill,
    "radio_distill": _radio_distill,
    "rtdetr": _rtdetr,
    "rtdetr_distill": _detect,
    "dino": _detect,
    "oneformer": _universal,
    "mask2former": _universal,
    "clip": _clip,
}
"""TAO test spec -> its generated data and tiny-model overrides (vfmkit keys)."""
SLOW = {"rtdetr_distill", "mask2former"}
"""Trainings that repeat another's path (rtdetr, oneformer with the other head): slow; the others (about 40 s
together on 2 busy cores) run in the default suite."""


def test_every_tao_test_spec_has_a_training_case() -> None:
    assert set(CASES) == {path.stem for path in SPECS.glob("*.yaml")}


@pytest.mark.parametrize(
    "stem", [pytest.param(stem, marks=pytest.mark.slow) if stem in SLOW else stem for stem in CASES]
)
def test_a_converted_tao_spec_trains_one_epoch(stem: str, tmp_path: Path) -> None:
    overrides = [*CASES[stem](tmp_path / "data"), *SMALL_RUN, f"results_dir={tmp_path / 'runs'}"]
    converted = convert_tao_file(SPECS / f"{stem}.yaml", None, overrides, tmp_path / "vfm_spec.yaml")
    conversion = converted.conversion
    assert conversion.placeholders == []
    task = Task(conversion.task.vfm_task, converted.out)
    for key in ("train.optimizer.lr", "train.optimizer.weight_decay", "train.seed", "train.vision_lr"):
        if key in conversion.values:  # a TAO value reached the training run
            section, *rest = key.split(".")
            value = getattr(task.spec, section)
            for part in rest:
                value = getattr(value, part)
            assert value == conversion.values[key]
    result = task.train()
    assert (result.run_dir / "checkpoints" / "best.ckpt").is_file()
    assert result.val
