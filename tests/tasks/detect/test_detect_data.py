"""Detection data of the task: the spec section, COCO and YOLO sources, the preflight report (negatives counted,
every refusal named), the Dataset's sample format and seeded augmentation, collate, and the post-processing into
COCO results with the original category ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from tests.tasks.detect.detect_data import link_and_hide_yolo_images, make_detection_dataset, make_yolo_dataset

from vfmkit.data.preflight import recording_left_out
from vfmkit.errors import DataError
from vfmkit.metrics.coco import evaluate_coco
from vfmkit.tasks.detect.data import (
    DetectionDataset,
    MultiScaleCollate,
    build_train_augment,
    collate_detection,
    load_detection_data,
    preflight_detection,
)
from vfmkit.tasks.detect.postprocess import postprocess_detections, to_coco_results
from vfmkit.tasks.detect.spec import DetectAugmentSpec, DetectDataSpec, DetectSpec


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    return make_detection_dataset(tmp_path_factory.mktemp("coco"), num_images=6, negatives=2)


def _spec(image_dir, json_file, **extra) -> DetectDataSpec:
    return DetectDataSpec(train_data_sources=[{"image_dir": image_dir, "json_file": json_file}], **extra)


def test_spec_sections_validate():
    spec = DetectSpec.model_validate(DetectSpec.example)
    assert spec.task == "detect" and spec.model.head == "rtdetr" and spec.model.freeze_backbone is None
    assert spec.train.optimizer.lr == 1e-4 and spec.train.grad_clip == 0.1 and spec.export.postprocess is False
    assert spec.predict.conf_threshold == 0.5 and spec.model.frozen_fm.input_scale == 0.5
    with pytest.raises(ValidationError, match="train_data_sources is required"):
        DetectDataSpec()
    with pytest.raises(ValidationError, match="dataset.root is required for format 'yolo'"):
        DetectDataSpec(format="yolo")
    with pytest.raises(ValidationError, match="greater than or equal to 32"):
        DetectSpec.model_validate({**DetectSpec.example, "model": {"resolution": 16}})
    with pytest.raises(ValidationError, match="at least 32"):
        DetectAugmentSpec(multi_scales=[480, 16])


def test_coco_sources_and_the_preflight_report(coco_set):
    lines = []
    data = preflight_detection(_spec(*coco_set), log=lines.append)
    assert data.num_classes == 3 and data.category_ids == [1, 3, 7]
    assert data.class_names == ["circle", "square", "triangle"]
    report = lines[0].splitlines()
    assert "3 classes: circle (id 1), square (id 3), triangle (id 7)" in report[0]
    header, train = report[1].split(), report[2].split()
    assert header[:5] == ["split", "images", "negatives", "boxes", "crowd"]
    truth = json.loads(coco_set[1].read_text())
    per_class = [sum(a["category_id"] == cid for a in truth["annotations"]) for cid in (1, 3, 7)]
    assert train == ["train", "6", "2", str(len(truth["annotations"])), "0", *map(str, per_class)]
    assert data.ground_truth("train")["categories"][2]["id"] == 7


def test_num_classes_must_agree(coco_set):
    assert load_detection_data(_spec(*coco_set, num_classes=3)).num_classes == 3
    with pytest.raises(DataError, match=r"dataset.num_classes is 4 but the data has 3 categories \(circle, square"):
        load_detection_data(_spec(*coco_set, num_classes=4))


def test_several_sources_merge_and_refuse_shared_image_ids(coco_set, tmp_path):
    other = make_detection_dataset(tmp_path / "b", num_images=3, negatives=0, seed=1)
    sources = [{"image_dir": d, "json_file": j} for d, j in (coco_set, other)]
    with pytest.raises(DataError, match=r"b/annotations.json: image id 100 is also used in .*train split"):
        load_detection_data(DetectDataSpec(train_data_sources=sources))
    payload = json.loads(other[1].read_text())
    for image in payload["images"]:
        image["id"] += 1000
    for ann in payload["annotations"]:
        ann["image_id"] += 1000
    other[1].write_text(json.dumps(payload))
    data = load_detection_data(DetectDataSpec(train_data_sources=sources, val_data_sources=sources[:1]))
    assert len(data.split("train")) == 9 and len(data.split("val")) == 6


def test_the_dataset_sample_format(coco_set):
    data = load_detection_data(_spec(*coco_set))
    dataset = DetectionDataset(data.split("train"), resolution=32)
    truth = json.loads(coco_set[1].read_text())
    first = [a for a in truth["annotations"] if a["image_id"] == 100]
    image, target = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert target["orig_size"].tolist() == [64, 64] and int(target["image_id"]) == 100 and int(target["index"]) == 0
    x, y, w, h = first[0]["bbox"]
    torch.testing.assert_close(target["boxes"][0], torch.tensor([(x + w / 2) / 64, (y + h / 2) / 64, w / 64, h / 64]))
    assert target["labels"].tolist() == [{1: 0, 3: 1, 7: 2}[a["category_id"]] for a in first]
    negative = dataset[len(dataset) - 1][1]
    assert negative["boxes"].shape == (0, 4) and negative["labels"].dtype == torch.int64
    images, targets = collate_detection([dataset[0], dataset[1]])
    assert images.shape == (2, 3, 32, 32) and len(targets) == 2


def test_augmented_samples_depend_on_seed_epoch_and_index_only(coco_set):
    data = load_detection_data(_spec(*coco_set))
    augment = build_train_augment(DetectAugmentSpec(), 64)
    dataset = DetectionDataset(data.split("train"), 64, augment, seed=3)
    first, again = dataset[1], dataset[1]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1][0], first[0])
    collate = MultiScaleCollate([32, 96], dataset)
    sizes = {collate([dataset[k]])[0].shape[-1] for k in range(len(dataset))}
    assert sizes == {32, 96}


def test_an_image_whose_size_disagrees_with_its_json_is_refused(tmp_path):
    image_dir, json_file = make_detection_dataset(tmp_path, num_images=2, negatives=0)
    payload = json.loads(json_file.read_text())
    payload["images"][0]["width"] = 80
    json_file.write_text(json.dumps(payload))
    expected = r"img_000.png: the image is 64x64 but its annotation says 80x64 \(image id 100"
    with pytest.raises(DataError, match=expected):  # the preflight decodes every image
        load_detection_data(_spec(image_dir, json_file))
    dataset = DetectionDataset(load_detection_data(_spec(image_dir, json_file), check_images=False).split("train"), 32)
    with pytest.raises(DataError, match=expected):
        dataset[0]


def test_unreadable_images_are_left_out_and_listed(tmp_path):
    image_dir, json_file = make_detection_dataset(tmp_path, num_images=4, negatives=1)
    (image_dir / "img_001.png").write_bytes(b"not a png")
    lines = []
    data = preflight_detection(_spec(image_dir, json_file), log=lines.append)
    split = data.split("train")
    assert [image.id for image in split.images] == [100, 102, 103] and 101 not in split.annotations
    assert {a["image_id"] for a in split.ground_truth()["annotations"]} <= {100, 102}
    assert lines[0].startswith("left out of train: 1 of 4 images (unreadable") and "img_001.png" in lines[0]
    for index in (0, 2, 3):
        (image_dir / f"img_{index:03d}.png").write_bytes(b"")
    with pytest.raises(DataError, match="training split holds no readable images"):
        load_detection_data(_spec(image_dir, json_file))


def test_yolo_folders(tmp_path):
    root = make_yolo_dataset(tmp_path / "yolo")
    spec = DetectDataSpec(format="yolo", root=root, names=["circle", "square", "triangle"])
    lines = []
    data = preflight_detection(spec, log=lines.append)
    assert set(data.splits) == {"train", "val"} and data.category_ids == [0, 1, 2]
    assert lines[0].splitlines()[2].split()[:3] == ["train", "6", "2"]  # no label file + empty label file
    train = data.split("train")
    label_file = root / "labels" / "train" / "002.txt"
    cls, cx, cy, w, h = (float(v) for v in label_file.read_text().splitlines()[0].split())
    obj = train.annotations[train.images[2].id][0]
    assert obj.label == int(cls) and obj.bbox == pytest.approx(((cx - w / 2) * 64, (cy - h / 2) * 64, w * 64, h * 64))


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("0 0.5 0.5 0.2", r"002.txt:2: expected 'class cx cy w h' .* got 4 fields"),
        ("x 0.5 0.5 0.2 0.2", r"002.txt:2: expected 'class cx cy w h' numbers"),
        ("3 0.5 0.5 0.2 0.2", r"002.txt:2: class id 3 is outside the 3 names"),
        ("1 0.95 0.5 0.2 0.2", r"002.txt:2: box .* lies outside the image"),
        ("1 0.5 0.5 0 0.2", r"002.txt:2: the box must have a positive width and height"),
    ],
)
def test_yolo_refusals_name_file_and_line(tmp_path, line, pattern):
    root = make_yolo_dataset(tmp_path / "yolo", {"train": 3})
    label_file = root / "labels" / "train" / "002.txt"
    label_file.write_text(label_file.read_text().splitlines()[0] + "\n" + line)
    with pytest.raises(DataError, match=pattern):
        load_detection_data(DetectDataSpec(format="yolo", root=root, names=["circle", "square", "triangle"]))


def test_yolo_label_without_image(tmp_path):
    root = make_yolo_dataset(tmp_path / "yolo", {"train": 3})
    (root / "labels" / "train" / "stray.txt").write_text("0 0.5 0.5 0.1 0.1")
    with pytest.raises(DataError, match=r"1 label file\(s\) in .* have no image .*stray.txt"):
        load_detection_data(DetectDataSpec(format="yolo", root=root, names=["a", "b", "c"]))


def test_postprocessed_ground_truth_scores_one_with_original_ids(coco_set):
    """Logits that put each target's class on its own query, through postprocess -> COCO results -> COCO eval."""
    data = load_detection_data(_spec(*coco_set))
    dataset = DetectionDataset(data.split("train"), 32)
    images, targets = collate_detection([dataset[i] for i in range(len(dataset))])
    logits = torch.full((len(targets), 5, 3), -20.0)
    boxes = torch.full((len(targets), 5, 4), 0.5)
    for b, target in enumerate(targets):
        for k, (label, box) in enumerate(zip(target["labels"], target["boxes"], strict=True)):
            logits[b, k, label], boxes[b, k] = 5.0 - k, box
    orig = torch.stack([t["orig_size"] for t in targets])
    out_boxes, scores, labels = postprocess_detections(logits, boxes, orig, 4, torch.tensor(data.category_ids))
    assert out_boxes.shape == (len(targets), 4, 4) and (scores[:, :-1] >= scores[:, 1:]).all()
    results = to_coco_results(out_boxes, scores, labels, [int(t["image_id"]) for t in targets], conf_threshold=0.5)
    assert {r["category_id"] for r in results} <= {1, 3, 7} and all(r["score"] >= 0.5 for r in results)
    metrics = evaluate_coco(data.ground_truth("train"), results)
    assert metrics.ap == pytest.approx(1.0)


def _yolo(root: Path, names=("circle", "square", "triangle")) -> DetectDataSpec:
    return DetectDataSpec(format="yolo", root=root, names=list(names) if names else None)


def test_n2_yolo_follows_symlinked_folders_and_skips_hidden_ones(tmp_path):
    root = make_yolo_dataset(tmp_path / "yolo", {"train": 6})
    link_and_hide_yolo_images(root, ("003", "004"), "002", tmp_path / "extra")
    split = load_detection_data(_yolo(root), ("train",)).split("train")
    names = [image.file_name for image in split.images]
    assert names == ["000.png", "001.png", "002.png", "005.png", "sub/003.png", "sub/004.png"]
    assert all(split.objects(image.id) for image in split.images[2:])  # the linked images kept their labels


def test_n15_yolo_leaves_an_unreadable_image_out_instead_of_refusing_the_dataset(tmp_path):
    root = make_yolo_dataset(tmp_path / "yolo", {"train": 4})
    (root / "images" / "train" / "003.png").write_bytes(b"")
    lines = []
    with recording_left_out() as left_out:
        data = load_detection_data(_yolo(root), ("train",), log=lines.append)
    assert [image.file_name for image in data.split("train").images] == ["000.png", "001.png", "002.png"]
    assert [(item.split, Path(item.path).name, item.kind) for item in left_out] == [("train", "003.png", "unreadable")]
    assert "003.png" in lines[0] and lines[0].startswith("left out of train: 1 of 4 images")


def test_n14_yolo_label_with_a_byte_order_mark(tmp_path):
    root = make_yolo_dataset(tmp_path / "yolo", {"train": 3})
    label = root / "labels" / "train" / "002.txt"
    label.write_bytes(b"\xef\xbb\xbf" + label.read_bytes())
    split = load_detection_data(_yolo(root), ("train",)).split("train")
    assert len(split.objects(3)) == 2


def test_n19_yolo_names_from_data_yaml(tmp_path):
    root = make_yolo_dataset(tmp_path / "yolo", {"train": 3})
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  0: circle\n  1: square\n  2: triangle\n")
    assert load_detection_data(_yolo(root, names=None), ("train",)).class_names == ["circle", "square", "triangle"]
    with pytest.raises(DataError, match=r"dataset.names \['a', 'b', 'c'\] differs from the names in .*data.yaml"):
        load_detection_data(_yolo(root, names=("a", "b", "c")), ("train",))
    (root / "data.yaml").unlink()
    with pytest.raises(DataError, match="dataset.names is required for format 'yolo' \\(or a data.yaml"):
        load_detection_data(_yolo(root, names=None), ("train",))
