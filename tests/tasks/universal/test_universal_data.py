"""COCO-panoptic reading (sparse category ids), preflight refusals, OneFormer-style per-task targets and the dataset."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from tests.tasks.universal.universal_data import BLOCK, DISC, GROUND, SKY, make_panoptic_dataset, split_paths

from vfmkit.data.palette import Palette
from vfmkit.errors import DataError
from vfmkit.metrics.panoptic import id2rgb, read_panoptic_png
from vfmkit.models.heads.mask2former import task_tokens
from vfmkit.spec.dense import DenseAugmentSpec
from vfmkit.tasks.universal.categories import CategoryTable, SegmentInfo
from vfmkit.tasks.universal.data import UniversalDataset, collate_universal, preflight_universal
from vfmkit.tasks.universal.splits import (
    load_annotation,
    load_coco_instances_split,
    load_coco_panoptic_split,
    semantic_mask_split,
)
from vfmkit.tasks.universal.targets import (
    draw_task,
    resolve_task_prob,
    semantic_map,
    target_texts,
    task_targets,
)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return make_panoptic_dataset(tmp_path_factory.mktemp("pan"), {"train": 4, "val": 2})


def load(root, split="train"):
    return load_coco_panoptic_split(split, *split_paths(root, split))


def rewrite(root, tmp_path, edit) -> tuple:
    """A copy of the train split's JSON changed by ``edit(data)``; returns the split paths with the new JSON."""
    images, json_file, pngs = split_paths(root, "train")
    data = json.loads(json_file.read_text())
    edit(data)
    new_json = tmp_path / "panoptic_train.json"
    new_json.write_text(json.dumps(data))
    return images, new_json, pngs


def test_sparse_category_ids_map_to_contiguous_indices_and_back(dataset_root):
    split = load(dataset_root)
    table = split.categories
    assert table.original_ids == [DISC, BLOCK, SKY, GROUND] and table.names == ["disc", "block", "sky", "ground"]
    assert table.isthing == [True, True, False, False]
    assert table.index(SKY) == 2 and table.index(99) is None
    assert CategoryTable.from_meta(json.loads(json.dumps(table.as_meta()))).original_ids == table.original_ids
    assert len(split) == 4 and split.samples[0].image.endswith("000.png")
    crowd = [s for s in split.samples[0].segments if s.iscrowd]
    assert len(crowd) == 1 and crowd[0].category == table.index(DISC)


def test_preflight_counts_segments_crowd_and_void(dataset_root):
    report = preflight_universal({"train": load(dataset_root), "val": load(dataset_root, "val"), "test": None})
    assert report.crowd["train"] == 1 and report.void_pixels["train"] > 0 and report.void_pixels["val"] > 0
    assert report.segments["train"][2] == 4  # one sky segment per image
    text = report.format()
    assert "sky (12)" in text and "(crowd segments)" in text and "no test split" in text


def test_a_png_id_missing_from_segments_info_is_named(dataset_root, tmp_path):
    def drop_block(data):
        info = data["annotations"][2]["segments_info"]
        data["annotations"][2]["segments_info"] = [s for s in info if s["category_id"] != GROUND]

    split = load_coco_panoptic_split("train", *rewrite(dataset_root, tmp_path, drop_block))
    with pytest.raises(DataError, match=r"002\.png: segment id\(s\) 25002 \(\d+ px\) are not in segments_info"):
        preflight_universal({"train": split})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["annotations"][1]["segments_info"][0].update(id=0),
            r"annotations\[1\] \(001\.png\): segments_info\[0\]: segment id 0 must be > 0",
        ),
        (lambda d: d["annotations"][1]["segments_info"][0].update(id=-5), r"segment id -5 must be > 0"),
        (
            lambda d: d["annotations"][1]["segments_info"][0].update(category_id=40),
            r"segments_info\[0\]: category_id 40 is not in categories",
        ),
        (lambda d: d["categories"][0].update(id=0), r"categories\[0\]: category id 0 must be > 0"),
        (lambda d: d["annotations"][0].update(image_id=999), r"annotations\[0\] \(000\.png\): image_id 999 is not"),
        (lambda d: d.pop("categories"), r"top level: missing key 'categories'"),
        # N6: each one-field change gave a traceback (ValueError, KeyError, TypeError)
        (lambda d: d["categories"][0].update(id="x"), r"categories\[0\]: key 'id' must be int, got 'x'"),
        (lambda d: d["images"][0].pop("id"), r"images\[0\]: missing key 'id'"),
        (
            lambda d: d["annotations"][1]["segments_info"][0].update(id="abc"),
            r"segments_info\[0\]: key 'id' must be int, got 'abc'",
        ),
        (lambda d: d["annotations"][1].update(segments_info="none"), r"key 'segments_info' must be list, got 'none'"),
        (
            lambda d: d["annotations"][1]["segments_info"][0].pop("category_id"),
            r"segments_info\[0\]: missing key 'category_id'",
        ),
        # N14: a duplicate image id was reported as an annotation whose image is missing
        (
            lambda d: d["images"][1].update(id=d["images"][0]["id"]),
            r"images\[1\]: duplicate image id .* \(also images\[0\]\)",
        ),
    ],
)
def test_bad_annotations_are_refused_with_file_and_id(dataset_root, tmp_path, edit, message):
    with pytest.raises(DataError, match=message):
        load_coco_panoptic_split("train", *rewrite(dataset_root, tmp_path, edit))


def test_a_png_of_another_size_than_its_image_is_refused(dataset_root, tmp_path):
    images, json_file, pngs = split_paths(dataset_root, "train")
    copy = tmp_path / "pngs"
    copy.mkdir()
    for png in pngs.iterdir():
        copy.joinpath(png.name).write_bytes(png.read_bytes())
    ids = read_panoptic_png(copy / "003.png")
    Image.fromarray(id2rgb(ids[:, :48])).save(copy / "003.png")
    split = load_coco_panoptic_split("train", images, json_file, copy)
    with pytest.raises(DataError, match=r"003\.png is 48x64 but its image .*003\.png is 64x64"):
        preflight_universal({"train": split})


def test_missing_files_are_named(dataset_root, tmp_path):
    with pytest.raises(DataError, match="panoptic JSON not found: .*nope.json"):
        load_coco_panoptic_split("train", dataset_root, tmp_path / "nope.json")
    images, json_file, _ = split_paths(dataset_root, "train")
    with pytest.raises(
        DataError, match=r"4 file\(s\) named by the annotations do not exist, e\.g\. .*no_pngs/000\.png"
    ):
        load_coco_panoptic_split("train", images, json_file, tmp_path / "no_pngs")


def segments_fixture():
    """4 x 4 ids: two things of class 0 (ids 5, 6), one crowd of class 0 (7), stuff class 1 split in two (8, 9)."""
    ids = torch.tensor([[5, 5, 8, 8], [6, 6, 8, 8], [7, 0, 9, 9], [7, 0, 9, 9]])
    segments = [
        SegmentInfo(5, 0),
        SegmentInfo(6, 0),
        SegmentInfo(7, 0, iscrowd=True),
        SegmentInfo(8, 1),
        SegmentInfo(9, 1),
        SegmentInfo(11, 1),
    ]
    return ids, segments


def test_per_task_targets_follow_the_oneformer_mapper():
    ids, segments = segments_fixture()
    isthing = [True, False]
    labels, masks = task_targets(ids, segments, isthing, "panoptic")
    assert labels.tolist() == [0, 0, 1, 1] and masks.dtype == torch.bool  # crowd and empty (11) segments dropped
    assert [int(m.sum()) for m in masks] == [2, 2, 4, 4]
    labels, masks = task_targets(ids, segments, isthing, "instance")
    assert labels.tolist() == [0, 0]  # things only
    labels, masks = task_targets(ids, segments, isthing, "semantic")
    assert labels.tolist() == [0, 1] and [int(m.sum()) for m in masks] == [4, 8]  # one mask per class, no crowd
    empty_labels, empty_masks = task_targets(torch.zeros(4, 4, dtype=torch.int64), segments, isthing, "panoptic")
    assert empty_labels.shape == (0,) and empty_masks.shape == (0, 4, 4)


def test_semantic_ground_truth_texts_and_task_draws():
    ids, segments = segments_fixture()
    semantic = semantic_map(ids.numpy(), segments)
    assert semantic.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0, -1, 1, 1], [0, -1, 1, 1]]  # crowd keeps its class
    assert target_texts([1, 0, 0], ["car", "sky"], "instance", 5) == [
        "a photo with a car",
        "a photo with a car",
        "a photo with a sky",
        "an instance photo",
        "an instance photo",
    ]
    assert target_texts([0, 1], ["car", "sky"], "panoptic", 1) == ["a photo with a car"]
    thresholds = resolve_task_prob({"semantic": 0.33, "instance": 0.33, "panoptic": 0.34})
    assert thresholds == pytest.approx((0.33, 0.66))
    draws = Counter(draw_task(thresholds, seed) for seed in range(3000))
    assert all(abs(draws[task] / 3000 - 1 / 3) < 0.04 for task in ("semantic", "instance", "panoptic"))
    assert {draw_task(resolve_task_prob({"panoptic": 1.0}), s) for s in range(50)} == {"panoptic"}
    with pytest.raises(ValueError, match="add up to 1"):
        resolve_task_prob({"semantic": 0.5, "panoptic": 0.6})


def test_training_items_are_augmented_jointly_and_reproducibly(dataset_root):
    split = load(dataset_root)
    augment = DenseAugmentSpec(scale_range=(0.5, 1.5), hflip=0.5)
    probs = {"semantic": 0.33, "instance": 0.33, "panoptic": 0.34}
    dataset = UniversalDataset(split, 48, True, augment, seed=3, task_prob=probs, num_texts=5, text_context_length=16)
    item = dataset[0]
    assert item["image"].shape == (3, 48, 48) and item["masks"].shape[1:] == (48, 48)
    assert len(item["labels"]) == len(item["masks"]) and item["text_tokens"].shape == (5, 16)
    assert torch.equal(item["task_tokens"], task_tokens([item["task"]])[0])
    again = dataset[0]
    assert item["task"] == again["task"] and torch.equal(item["masks"], again["masks"])
    dataset.set_epoch(1)
    tasks = {dataset[i]["task"] for i in range(4)} | {item["task"]}
    assert len(tasks) >= 2
    batch = collate_universal([dataset[i] for i in range(3)])
    assert batch["images"].shape == (3, 3, 48, 48) and batch["task_tokens"].shape == (3, 77)
    assert len(batch["targets"]) == 3 and batch["indices"] == [0, 1, 2] and len(batch["task"]) == 3


def test_augmented_masks_come_from_the_segments(dataset_root):
    split = load(dataset_root)
    dataset = UniversalDataset(split, 64, True, DenseAugmentSpec(scale_range=(0.3, 2.0), hflip=0.5), seed=1)
    for index in range(len(split)):
        item = dataset[index]
        covered = item["masks"].sum(0)
        assert int(covered.max()) <= 1  # panoptic targets never overlap
        assert item["labels"].tolist() and set(item["labels"].tolist()) <= {0, 1, 2, 3}


def test_evaluation_items_keep_full_resolution_ground_truth(dataset_root):
    split = load(dataset_root, "val")
    item = UniversalDataset(split, 32)[1]
    assert item["image"].shape == (3, 32, 32) and item["ids"].shape == (64, 64) and item["semantic"].shape == (64, 64)
    assert int((item["semantic"] == -1).sum()) == int((item["ids"] == 0).sum()) > 0  # the VOID region
    assert {s.id for s in item["segments"]} >= set(np.unique(item["ids"].numpy()).tolist()) - {0}


def test_semantic_mask_pairs_become_stuff_segments(tmp_path):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, 4:] = 2
    mask[0, 0] = 255
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(mask, mode="L").save(tmp_path / "a_mask.png")
    palette = Palette(["bg", "cat", "dog"], ids=[0, 1, 2])
    split = semantic_mask_split("train", [tmp_path / "a.png"], [tmp_path / "a_mask.png"], palette, tmp_path)
    assert split.categories.names == ["bg", "cat", "dog"] and split.categories.isthing == [False] * 3
    report = preflight_universal({"train": split})
    assert report.void_pixels["train"] == 1 and report.segments["train"].tolist() == [1, 0, 1]
    item = UniversalDataset(split, 8, True, DenseAugmentSpec(scale_range=None, hflip=0.0), task_prob={"semantic": 1})[0]
    assert item["labels"].tolist() == [0, 2] and [int(m.sum()) for m in item["masks"]] == [31, 32]
    mask[1, 1] = 7
    Image.fromarray(mask, mode="L").save(tmp_path / "a_mask.png")
    with pytest.raises(DataError, match=r"a_mask\.png: unknown id value"):
        preflight_universal({"train": split})


def _instances_json(tmp_path, annotations, size=(8, 10)) -> tuple:
    Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = {
        "images": [{"id": 5, "file_name": "a.png", "height": size[0], "width": size[1]}],
        "categories": [{"id": 9, "name": "dog"}, {"id": 4, "name": "cat"}],
        "annotations": annotations,
    }
    (tmp_path / "inst.json").write_text(json.dumps(data))
    return tmp_path, tmp_path / "inst.json"


def _box(ann_id, category, x0, y0, x1, y1, **extra) -> dict:
    polygon = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    bbox = [x0, y0, x1 - x0, y1 - y0]
    return {"id": ann_id, "image_id": 5, "category_id": category, "bbox": bbox, "segmentation": polygon, **extra}


def test_coco_instances_become_an_id_map_with_small_objects_on_top(tmp_path):
    big, small = _box(1, 9, 0, 0, 8, 6, area=48), _box(2, 4, 2, 2, 4, 4, area=4)
    split = load_coco_instances_split("val", *_instances_json(tmp_path, [small, big]))
    assert split.categories.original_ids == [4, 9] and split.categories.isthing == [True, True]  # ascending ids
    (sample,) = split.samples
    ids, segments = load_annotation(sample, split)
    assert segments == (SegmentInfo(1, 0, False), SegmentInfo(2, 1, False))  # segment k + 1 = annotation k
    assert (ids == 1).sum() == 4 and (ids == 2).sum() == 44 and (ids == 0).sum() == 80 - 48
    report = preflight_universal({"val": split})
    assert report.segments["val"].tolist() == [1, 1] and report.void_pixels["val"] == 32
    item = UniversalDataset(split, 8)[0]
    assert [o["id"] for o in item["objects"]] == [2, 1] and item["objects"][0]["segmentation"] == small["segmentation"]


def test_coco_instances_refusals_name_the_annotation(tmp_path):
    no_mask = {**_box(3, 9, 0, 0, 2, 2), "segmentation": None}
    with pytest.raises(DataError, match=r"inst\.json: annotation 3 \(image 5\) has no 'segmentation'"):
        load_coco_instances_split("val", *_instances_json(tmp_path, [no_mask]))
    bad = {**_box(4, 9, 0, 0, 2, 2), "segmentation": [[0, 0, 1]]}
    with pytest.raises(DataError, match=r"inst\.json: annotations\[0\] \(id 4\): segmentation\[0\]: a polygon needs"):
        load_coco_instances_split("val", *_instances_json(tmp_path, [bad]))
    split = load_coco_instances_split("val", *_instances_json(tmp_path, [_box(1, 9, 0, 0, 2, 2)], size=(8, 10)))
    Image.fromarray(np.zeros((9, 10, 3), dtype=np.uint8)).save(tmp_path / "a.png")  # the JSON says 10x8
    with pytest.raises(DataError, match=r"is 10x8 but its image .*a\.png is 10x9"):
        preflight_universal({"val": split})
