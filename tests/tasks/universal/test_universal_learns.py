"""Proof that universal segmentation learns, through ``vfmkit.Task("universal", ...).train()``: a tiny Mask2Former /
OneFormer overfits a fixed set of 8 generated COCO-panoptic images (things, stuff, a crowd and a VOID region, sparse
category ids); the final evaluation of the best checkpoint then solves every task at inference, each with its own
pass (OneFormer: its task token): panoptic (PQ of the things), semantic (mIoU) and instance (COCO mask AP)."""

from __future__ import annotations

import csv

import pytest
from tests.tasks.universal.universal_data import make_panoptic_dataset, repeat_split
from tests.tasks.universal.universal_helpers import (
    NO_AUGMENT,
    QUIET,
    TINY,
    optimizer_overrides,
    panoptic_overrides,
)

from vfmkit import Task

PASSES = 8  # the training JSON lists the 8 images 8 times: an epoch is 16 steps of 4 images
EPOCHS = {"mask2former": 5, "oneformer": 7}  # oneformer's supervision is split over three tasks
LR = {"mask2former": 2e-3, "oneformer": 3e-3}


@pytest.fixture(scope="module")
def fixed_set(tmp_path_factory):
    root = make_panoptic_dataset(tmp_path_factory.mktemp("uni"), {"train": 8})
    return root, repeat_split(root, "train", PASSES)


@pytest.mark.parametrize("head", ["mask2former", "oneformer"])
def test_overfits_a_fixed_set_for_every_task(fixed_set, head, tmp_path):
    root, repeated = fixed_set
    epochs = EPOCHS[head]
    overrides = [
        *panoptic_overrides(root, repeated, val="train"),  # validation = the 8 training images
        *TINY,
        *NO_AUGMENT,
        *QUIET,
        *optimizer_overrides(LR[head], epochs),
        f"model.head={head}",
        "train.batch_size=4",  # oneformer: the contrastive term takes part (batch >= 2)
        f"train.val_every={epochs}",
        f"results_dir={tmp_path}",
    ]
    result = Task("universal", None, overrides).train()
    val = result.val
    summary = {k: v for k, v in val.items() if k != "per_class"}
    assert val["tasks"] == ["panoptic", "semantic", "instance"], summary
    assert val["pq_things"] >= 0.7 and val["pq_stuff"] >= 0.7, summary
    assert val["miou"] >= 0.8, summary
    assert val["mask_ap50"] >= 0.7, summary
    losses = [float(r["train/loss"]) for r in csv.DictReader((result.run_dir / "metrics.csv").open())]
    assert losses[-1] < 0.25 * losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize("head", ["mask2former", "oneformer"])
def test_generalises_to_held_out_images(tmp_path, head):
    root = make_panoptic_dataset(tmp_path / "data", {"train": 64, "val": 16}, seed=1)
    epochs = 50
    overrides = [
        *panoptic_overrides(root),
        *TINY,
        *QUIET,
        *optimizer_overrides(2e-3, epochs),
        "dataset.augment.scale_range=[0.75, 1.25]",
        f"model.head={head}",
        "train.batch_size=8",
        f"train.val_every={epochs}",
        f"results_dir={tmp_path / 'runs'}",
    ]
    held_out = Task("universal", None, overrides).train().val
    summary = {k: v for k, v in held_out.items() if k != "per_class"}
    assert held_out["pq"] >= 0.4 and held_out["miou"] >= 0.6, summary
