"""One evaluation pass: PQ and mIoU from query outputs against full-resolution ground truth."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from tests.tasks.universal.universal_data import make_panoptic_dataset, split_paths

from vfmkit.tasks.universal.data import UniversalDataset
from vfmkit.tasks.universal.metrics import UniversalEvaluator
from vfmkit.tasks.universal.splits import load_coco_panoptic_split


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


def test_mask_ap_of_perfect_instances_is_one_and_crowd_regions_are_ignored(val_split):
    evaluator = UniversalEvaluator(val_split.categories)
    dataset = UniversalDataset(val_split, 64)
    crowd = 0
    for index in range(len(dataset)):
        item = dataset[index]
        logits, masks = oracle_outputs(item, len(val_split.categories))
        evaluator.update_instance(logits, masks, item["image_id"], item["ids"], item["segments"])
        crowd += sum(s.iscrowd for s in item["segments"])
    metrics = evaluator.compute()
    assert crowd == 1 and metrics["mask_ap"] == pytest.approx(1.0) and metrics["mask_ap50"] == pytest.approx(1.0)
    assert metrics["pq"] is None and metrics["miou"] is None
    rows = {row["name"]: row for row in metrics["per_class"]}
    assert rows["disc"]["ap"] == pytest.approx(1.0) and rows["sky"]["ap"] is None  # stuff has no AP
    assert {r["category_id"] for r in evaluator.results} <= {3, 7}  # original ids, things only
    # a COCO-instances image brings its own annotations: they are the ground truth
    evaluator.reset()
    item = dataset[1]
    logits, masks = oracle_outputs(item, len(val_split.categories))
    evaluator.update_instance(logits, masks, item["image_id"], item["ids"], item["segments"], objects=[])
    assert evaluator.compute()["mask_ap"] is None  # no ground-truth object: undefined, not 0


def test_gathered_state_of_two_processes_equals_one_process(val_split):
    dataset = UniversalDataset(val_split, 64)
    whole, parts = UniversalEvaluator(val_split.categories), [UniversalEvaluator(val_split.categories) for _ in "ab"]
    for index in range(len(dataset)):
        item = dataset[index]
        logits, masks = oracle_outputs(item, len(val_split.categories))
        masks[0, :8] = -masks[0, :8]  # imperfect, so every metric carries information
        for evaluator in (whole, parts[index % 2]):
            evaluator.update_panoptic(logits, masks, item["ids"], item["segments"], index)
            evaluator.update_semantic(logits, masks, item["semantic"])
            evaluator.update_instance(logits, masks, item["image_id"], item["ids"], item["segments"])

    def recorded(evaluator) -> tuple[list, list]:  # what a process contributes to each collective call
        sums, lists = [], []
        copy.deepcopy(evaluator).gather(lambda t: sums.append(t.clone()) or t, lambda x: lists.append(list(x)) or x)
        return sums, lists

    records = [recorded(part) for part in parts]
    for rank, part in enumerate(parts):  # each process receives the sums and the rank-ordered concatenations
        sums, lists = iter(records[1 - rank][0]), iter(zip(records[0][1], records[1][1], strict=True))
        part.gather(
            lambda t, sums=sums: t + next(sums), lambda _, lists=lists: [x for pair in next(lists) for x in pair]
        )
        assert _close(part.compute(), whole.compute())


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b
