"""Proof that universal segmentation learns: a tiny Mask2Former / OneFormer overfits a fixed set of 8 generated
COCO-panoptic images (things, stuff, a crowd and a VOID region, sparse category ids) and then solves every task at
inference: panoptic (PQ of the things), semantic (mIoU) and instance (COCO mask AP at IoU 0.5)."""

from __future__ import annotations

import pytest
from tests.tasks.universal.universal_data import make_panoptic_dataset, split_paths
from tests.tasks.universal.universal_helpers import evaluate, tiny_model, train

from vfmkit.tasks.universal.data import load_coco_panoptic_split

STEPS = {"mask2former": 70, "oneformer": 100}  # oneformer's supervision is split over three tasks
LR = {"mask2former": 3e-3, "oneformer": 4e-3}
ONEFORMER_TASKS = {"semantic": 0.33, "instance": 0.33, "panoptic": 0.34}


@pytest.fixture(scope="module")
def fixed_set(tmp_path_factory):
    root = make_panoptic_dataset(tmp_path_factory.mktemp("uni"), {"train": 8})
    return load_coco_panoptic_split("train", *split_paths(root, "train"))


@pytest.mark.parametrize("head", ["mask2former", "oneformer"])
def test_overfits_a_fixed_set_for_every_task(fixed_set, head):
    model = tiny_model(head, len(fixed_set.categories))
    before = evaluate(model, fixed_set)
    task_prob = ONEFORMER_TASKS if head == "oneformer" else None
    losses = train(model, fixed_set, STEPS[head], batch_size=8, lr=LR[head], task_prob=task_prob)
    after = evaluate(model, fixed_set)
    summary = {k: v for k, v in after.items() if k != "per_class"}
    assert losses[-1] < 0.25 * losses[0], losses
    assert after["pq_things"] >= 0.7 and after["pq_things"] > before["pq_things"] + 0.5, summary
    assert after["miou"] >= 0.8, summary
    assert after["mask_ap50"] >= 0.7, summary
    assert after["pq_stuff"] >= 0.7, summary


@pytest.mark.slow
@pytest.mark.parametrize("head", ["mask2former", "oneformer"])
def test_generalises_to_held_out_images(tmp_path, head):
    from vfmkit.spec.dense import DenseAugmentSpec

    root = make_panoptic_dataset(tmp_path, {"train": 64, "val": 16}, seed=1)
    train_split = load_coco_panoptic_split("train", *split_paths(root, "train"))
    val_split = load_coco_panoptic_split("val", *split_paths(root, "val"))
    model = tiny_model(head, len(train_split.categories))
    task_prob = ONEFORMER_TASKS if head == "oneformer" else None
    augment = DenseAugmentSpec(scale_range=(0.75, 1.25), hflip=0.5)
    train(model, train_split, 400, batch_size=8, lr=2e-3, task_prob=task_prob, augment=augment)
    held_out = evaluate(model, val_split)
    summary = {k: v for k, v in held_out.items() if k != "per_class"}
    assert held_out["pq"] >= 0.4 and held_out["miou"] >= 0.6, summary
