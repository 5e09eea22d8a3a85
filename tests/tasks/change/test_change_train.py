"""Change detection training through the real Task API, on data generated here: change segmentation of shapes
that appear or vanish reaches change F1 >= 0.7, golden-vs-test classification with planted defects reaches
accuracy >= 0.9 (learnable) and trains sensibly (euclidean); run folders; bad dataset paths."""

from __future__ import annotations

import csv
import json
import time

import pytest
from tests.tasks.change.change_data import make_golden_csv, make_levir

from vfmkit import Task
from vfmkit.errors import VfmError

TINY = [
    "model.backbone=test-radio-v2-tiny",
    "model.pretrained=false",
    "model.resolution=64",
    "model.neck_channels=64",
    "model.decoder_channels=64",
    "train.num_workers=0",
    "train.batch_size=16",
]
# the tiny random-init backbone is trained too: its frozen random features alone learn slowly
FAST = [
    "model.neck=simple_pyramid",
    "model.freeze_backbone=false",
    "train.optimizer.lr=0.002",
    "train.optimizer.backbone_lr_scale=1.0",
]
RUN_FILES = (
    "spec.resolved.yaml",
    "env.json",
    "metrics.csv",
    "MODEL_CARD.md",
    "plots/loss.png",
    "plots/metrics.png",
    "checkpoints/best.ckpt",
    "checkpoints/last.ckpt",
    "evaluate/val/metrics.json",
)


@pytest.fixture(scope="module")
def levir(tmp_path_factory):
    return make_levir(tmp_path_factory.mktemp("levir"))


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    return make_golden_csv(tmp_path_factory.mktemp("golden"))


def _csv_args(root, lights="[_L0]"):
    return [
        "dataset.format=csv",
        f"dataset.train_csv={root / 'train.csv'}",
        f"dataset.val_csv={root / 'val.csv'}",
        f"dataset.light_conditions={lights}",
    ]


def _check_run(result, epochs: int, extra: tuple[str, ...] = ()) -> None:
    for name in (*RUN_FILES, *extra):
        assert (result.run_dir / name).is_file(), name
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])
    saved = json.loads((result.run_dir / "evaluate" / "val" / "metrics.json").read_text())
    assert saved == result.val


def test_change_segmentation_reaches_f1(levir, tmp_path):
    start = time.perf_counter()
    result = Task(
        "change",
        None,
        [
            f"dataset.root={levir}",
            f"results_dir={tmp_path}",
            *TINY,
            *FAST,
            "model.class_weights=[1,3]",
            "train.epochs=8",
        ],
    ).train()
    seconds = time.perf_counter() - start
    print(f"change segmentation: val {result.val} in {seconds:.1f} s")
    assert result.val["change_f1"] >= 0.7, result.val
    assert result.val["overall_accuracy"] > 0.9 and result.val["miou"] > 0.7
    _check_run(result, 8, ("evaluate/val/confusion_matrix.png",))
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    assert {
        "val/change_f1",
        "val/change_iou",
        "val/change_precision",
        "val/change_recall",
        "val/miou",
        "val/overall_accuracy",
    } <= set(rows[0])
    card = (result.run_dir / "MODEL_CARD.md").read_text()
    assert "change_f1: " in card and "variant: segment" in card


def test_golden_vs_test_learnable_reaches_90_percent(golden, tmp_path):
    start = time.perf_counter()
    result = Task(
        "change", None, [*_csv_args(golden), f"results_dir={tmp_path}", *TINY, *FAST, "train.epochs=7"]
    ).train()
    seconds = time.perf_counter() - start
    print(f"golden vs test (learnable): val {result.val} in {seconds:.1f} s")
    assert result.val["accuracy"] >= 0.9, result.val
    assert result.val["defect_accuracy"] >= 0.8 and result.val["false_alarm_rate"] <= 0.2
    assert result.val["miss_rate"] == pytest.approx(1 - result.val["defect_accuracy"])
    _check_run(result, 7, ("evaluate/val/roc.png",))


def test_golden_vs_test_euclidean_trains(golden, tmp_path):
    result = Task(
        "change",
        None,
        [
            *_csv_args(golden, "[_L0,_L1]"),
            f"results_dir={tmp_path}",
            *TINY,
            *FAST,
            "model.difference=euclidean",
            "train.epochs=4",
        ],
    ).train()
    print(f"golden vs test (euclidean, 2 lighting conditions): val {result.val}")
    assert result.val["auc"] > 0.6, result.val  # chance: 0.5; global embeddings learn slower than learnable
    assert result.val["tp"] + result.val["fp"] + result.val["tn"] + result.val["fn"] == 32
    _check_run(result, 4, ("evaluate/val/roc.png",))


def test_multi_golden_learnable_trains(tmp_path):
    root = make_golden_csv(tmp_path / "data", {"train": 16, "val": 8}, goldens_per_folder=4)
    result = Task(
        "change",
        None,
        [
            *_csv_args(root),
            "dataset.num_golden=3",
            f"results_dir={tmp_path}",
            *TINY,
            *FAST,
            "train.epochs=1",
            "train.batch_size=8",
        ],
    ).train()
    assert result.val["tp"] + result.val["fp"] + result.val["tn"] + result.val["fn"] == 8


def test_bad_dataset_path_names_it(tmp_path):
    missing = tmp_path / "no-such-levir"
    with pytest.raises(VfmError, match="no-such-levir"):
        Task("change", None, [f"dataset.root={missing}", f"results_dir={tmp_path}", *TINY]).train()
    csv_missing = tmp_path / "nowhere" / "train.csv"
    with pytest.raises(VfmError, match="nowhere"):
        Task(
            "change", None, ["dataset.format=csv", f"dataset.train_csv={csv_missing}", f"results_dir={tmp_path}", *TINY]
        ).train()


def test_spec_variant_follows_the_data_format(tmp_path):
    segment = Task("change", None, [f"dataset.root={tmp_path}"]).spec
    classify = Task("change", None, ["dataset.format=csv", f"dataset.train_csv={tmp_path / 't.csv'}"]).spec
    assert (segment.task_type, classify.task_type) == ("segment", "classify")
    assert classify.threshold == 0.5
    euclid = Task(
        "change",
        None,
        [
            "dataset.format=csv",
            f"dataset.train_csv={tmp_path / 't.csv'}",
            "model.difference=euclidean",
            "model.margin=3",
        ],
    ).spec
    assert euclid.threshold == 1.5
    with pytest.raises(VfmError, match="task_type 'classify' needs dataset.format 'csv'"):
        Task("change", None, [f"dataset.root={tmp_path}", "task_type=classify"])
