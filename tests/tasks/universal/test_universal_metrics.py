"""One evaluation pass: PQ and mIoU from query outputs against full-resolution ground truth."""

from __future__ import annotations

import json

import pytest
import torch
from tests.tasks.universal.universal_data import make_panoptic_dataset, split_paths

from vfmkit.tasks.universal.data import UniversalDataset, load_coco_panoptic_split
from vfmkit.tasks.universal.metrics import UniversalEvaluator


def oracle_outputs(item: dict, num_classes: int, queries: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Query outputs reproducing an item's non-crowd segments at quarter resolution."""
    logits = torch.full((queries, num_classes + 1), -10.0)
    logits[:, -1] = 10.0
    masks = torch.full((queries, *item["ids"].shape), -10.0)
    segments = [s for s in item["segments"] if not s.iscrowd]
    for q, segment in enumerate(segments):
        logits[q, segment.category], logits[q, -1] = 10.0, -10.0
        masks[q][item["ids"] == segment.id] = 10.0
    return logits, masks


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    root = make_panoptic_dataset(tmp_path_factory.mktemp("m"), {"val": 3})
    return load_coco_panoptic_split("val", *split_paths(root, "val"))


def test_perfect_outputs_score_one(val_split):
    evaluator = UniversalEvaluator(val_split.categories)
    dataset = UniversalDataset(val_split, 64)
    for index in range(len(dataset)):
        item = dataset[index]
        logits, masks = oracle_outputs(item, len(val_split.categories))
        evaluator.update_panoptic(logits, masks, item["ids"], item["segments"], image=index)
        evaluator.update_semantic(logits, masks, item["semantic"])
    metrics = evaluator.compute()
    assert metrics["pq"] == pytest.approx(1.0) and metrics["pq_things"] == pytest.approx(1.0)
    assert metrics["n_things"] == 2 and metrics["n_stuff"] == 2
    assert metrics["miou"] == pytest.approx(1.0, abs=0.02)  # crowd pixels are labelled but have no query
    row = metrics["per_class"][2]
    assert row["id"] == 12 and row["name"] == "sky" and row["isthing"] is False and row["tp"] == 3
    json.dumps(metrics)  # JSON-safe


def test_a_task_not_evaluated_is_none_and_reset_forgets(val_split):
    evaluator = UniversalEvaluator(val_split.categories)
    item = UniversalDataset(val_split, 64)[0]
    logits, masks = oracle_outputs(item, 4)
    evaluator.update_semantic(logits, masks[:, ::4, ::4], item["semantic"])  # quarter-resolution masks are resized
    metrics = evaluator.compute()
    assert metrics["pq"] is None and metrics["per_class"][0]["pq"] is None and metrics["miou"] > 0.7
    evaluator.reset()
    assert evaluator.compute()["miou"] is None
