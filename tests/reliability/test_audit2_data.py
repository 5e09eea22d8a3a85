"""Reliability audit 2 (``../shared/design/reliability-audit-2.md``), the data cases, through the CLI where a user
meets them: N2 (YOLO walker), N3 (COCO area), N4 (classify evaluate left-outs), N5 (universal and distill decode
before training), N6 (typed panoptic / instances readers), N7 (tiny images), N12 (no targets), N14 (panoptic
duplicate image id, YOLO BOM), N15 (YOLO unreadable image), N17 (polygons outside the image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.reliability.helpers import assert_one_line_error, run_vfm_batch
from tests.synthetic import make_shapes_dataset
from tests.tasks.contract_cases import DETECT_TINY, UNIVERSAL
from tests.tasks.detect.detect_data import link_and_hide_yolo_images, make_detection_dataset, make_yolo_dataset
from tests.tasks.distill.distill_data import make_pattern_dataset
from tests.tasks.universal.universal_data import make_instances_dataset, make_panoptic_dataset, split_paths

FAST = ["train.epochs=1", "train.batch_size=4", "train.num_workers=0", "evaluate.batch_size=4"]
TINY = ["model.backbone=test-radio-v2-tiny", "model.pretrained=false"]


def _truncate(path: Path) -> None:
    """Replace an image by the first half of its JPEG encoding (the header still reads)."""
    image = Image.open(path).convert("RGB")
    path.unlink()
    image.save(path.with_suffix(".tmp.jpg"), quality=95)
    data = path.with_suffix(".tmp.jpg").read_bytes()
    path.with_suffix(".tmp.jpg").unlink()
    path.write_bytes(data[: len(data) // 2])


def _detect(tmp: Path, train: tuple[Path, Path], *more: str) -> list[str]:
    return [
        "detect",
        "train",
        f"dataset.train_data_sources=[{{image_dir: {train[0]}, json_file: {train[1]}}}]",
        f"results_dir={tmp / 'runs'}",
        *TINY,
        *DETECT_TINY,
        *FAST,
        *more,
    ]


def _edit(json_file: Path, edit, name: str) -> Path:
    data = json.loads(json_file.read_text())
    edit(data)
    out = json_file.with_name(name)
    out.write_text(json.dumps(data))
    return out


@pytest.fixture(scope="module")
def detection(tmp_path_factory) -> tuple[Path, Path]:
    return make_detection_dataset(tmp_path_factory.mktemp("det"), num_images=6, size=64, seed=0)


def test_detection_refusals_before_any_run_folder(detection, tmp_path) -> None:
    """N3 area <= 0, N12 no boxes (none at all, only crowd), N6 a polygon faster-coco-eval cannot cast, N17 a polygon
    outside the image: rc 2 with one line naming the file and the annotation, no run folder."""
    images, json_file = detection

    def area(d):
        d["annotations"][0]["area"] = -1

    def no_boxes(d):
        d["annotations"] = []

    def all_crowd(d):
        for a in d["annotations"]:
            a["iscrowd"] = 1

    def strings(d):
        d["annotations"][1]["segmentation"] = [["a", "b", "c", "d", "e", "f"]]

    def outside(d):
        d["annotations"][2]["segmentation"] = [[0, 0, 1e6, 0, 1e6, 1e6]]

    edits = {"area": area, "none": no_boxes, "crowd": all_crowd, "strings": strings, "outside": outside}
    files = {name: _edit(json_file, edit, f"{name}.json") for name, edit in edits.items()}
    results = run_vfm_batch([_detect(tmp_path, (images, files[name])) for name in edits], tmp_path / "cli")
    expected = {
        "area": ("area.json", "annotations[0] (id 1): area -1 must be positive"),
        "none": ("the training split has no boxes", "hold no objects at all"),
        "crowd": ("the training split has no boxes", "crowd region(s), which are not training targets"),
        "strings": ("strings.json", "annotations[1]", "segmentation[0]: key 'polygon' must be a list of numbers"),
        "outside": ("outside.json", "annotations[2]", "outside its image (64x64)"),
    }
    for name, result in zip(edits, results, strict=True):
        assert_one_line_error(result.code, result.err, *expected[name])
    assert not (tmp_path / "runs").exists()


def test_n7_tiny_images_are_left_out_of_training_not_a_crash(detection, tmp_path) -> None:
    images, json_file = detection
    folder = tmp_path / "d1"
    folder.mkdir()
    for image in images.iterdir():
        (folder / image.name).write_bytes(image.read_bytes())
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(folder / "one.png")

    def add(d):
        d["images"].append({"id": 5000, "file_name": "one.png", "width": 1, "height": 1})
        d["annotations"].append(
            {"id": 9000, "image_id": 5000, "category_id": 3, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}
        )

    tiny = _edit(json_file, add, "tiny.json")
    (result,) = run_vfm_batch([_detect(tmp_path, (folder, tiny), "name=tiny")], tmp_path / "cli")
    assert result.code == 0, result.err
    assert "image " in result.out and "one.png is 1x1 px, smaller than the 4 px per side" in result.out
    recorded = json.loads((tmp_path / "runs" / "detect" / "tiny" / "left_out.json").read_text())
    assert [(r["split"], Path(r["path"]).name, r["kind"]) for r in recorded] == [("train", "one.png", "too small")]


def test_n2_n14_n15_yolo_walker_bom_and_unreadable_image(tmp_path) -> None:
    root = make_yolo_dataset(tmp_path / "yolo", {"train": 6, "val": 2})
    link_and_hide_yolo_images(root, ("002", "003"), "004", tmp_path / "extra")
    label = root / "labels" / "train" / "004.txt"
    label.write_bytes(b"\xef\xbb\xbf" + label.read_bytes())  # saved by Excel / Notepad with a BOM
    (root / "images" / "train" / "005.png").write_bytes(b"")
    args = ["dataset.format=yolo", f"dataset.root={root}", "dataset.names=[circle,square,triangle]"]
    argv = ["detect", "train", *args, f"results_dir={tmp_path / 'runs'}", *TINY, *DETECT_TINY, *FAST, "name=y"]
    (result,) = run_vfm_batch([argv], tmp_path / "cli")
    assert result.code == 0, result.err
    assert "left out of train: 1 of 6 images (unreadable" in result.out and "005.png" in result.out
    table = next(line.split() for line in result.out.splitlines() if line.split()[:1] == ["train"])
    assert table[1:3] == ["5", "2"]  # 5 images (sub/002, sub/003 read; the hidden copy not), 2 negatives


def test_n4_classify_evaluate_lists_and_records_unreadable_images(tmp_path) -> None:
    data = make_shapes_dataset(tmp_path / "cls", {"train": 2, "val": 2}, size=32)
    victim = sorted((data / "val").glob("*/*.png"))[0]
    _truncate(victim)
    common = [f"dataset.root={data}", f"results_dir={tmp_path / 'runs'}", *TINY, "model.resolution=32", *FAST]
    train, evaluate = run_vfm_batch(
        [
            ["classify", "train", *common, "name=c"],
            ["classify", "evaluate", *common, f"evaluate.checkpoint={tmp_path / 'runs' / 'classify' / 'c'}"],
        ],
        tmp_path / "cli",
    )
    assert train.code == 0 and evaluate.code == 0, evaluate.err
    assert "left out of val: 1 of 8 images (unreadable" in evaluate.out and victim.name in evaluate.out
    metrics = json.loads((tmp_path / "runs" / "classify" / "c" / "evaluate" / "val" / "metrics.json").read_text())
    assert metrics["images"] == 7 and [Path(r["path"]).name for r in metrics["left_out"]] == [victim.name]


def test_n5_universal_trains_past_an_image_it_decoded_first(tmp_path) -> None:
    root = make_panoptic_dataset(tmp_path / "pan", {"train": 4, "val": 2}, size=32)
    images, annotations, pngs = split_paths(root, "train")
    victim = sorted(images.glob("*.png"))[1]
    jpg = victim.with_suffix(".jpg")
    Image.open(victim).convert("RGB").save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    renamed = _edit(
        annotations,
        lambda d: [i.update(file_name=jpg.name) for i in d["images"] if i["file_name"] == victim.name],
        "panoptic_jpg.json",
    )
    val = split_paths(root, "val")
    argv = [
        "universal",
        "train",
        f"dataset.train={{images: {images}, annotations: {renamed}, panoptic: {pngs}}}",
        f"dataset.val={{images: {val[0]}, annotations: {val[1]}, panoptic: {val[2]}}}",
        f"results_dir={tmp_path / 'runs'}",
        *TINY,
        *UNIVERSAL,
        *FAST,
        "name=u",
    ]
    (result,) = run_vfm_batch([argv], tmp_path / "cli")
    assert result.code == 0, result.err
    assert "left out of train: 1 of 4 samples (unreadable" in result.out and jpg.name in result.out
    recorded = json.loads((tmp_path / "runs" / "universal" / "u" / "left_out.json").read_text())
    assert [Path(r["path"]).name for r in recorded] == [jpg.name]


def test_n5_distill_decodes_unlabeled_and_knn_images_before_training(tmp_path) -> None:
    data = make_pattern_dataset(tmp_path / "dis", {"train": 1, "val": 1})
    unlabeled = sorted(data.unlabeled.glob("*.png"))[0]
    unlabeled.unlink()
    unlabeled.write_bytes(b"")  # a new file: the hard-linked k-NN copy stays readable
    query = sorted((data.by_pattern / "val").glob("*/*.png"))[0]
    query.unlink()
    query.write_bytes(b"\x89PNG\r\n")
    teacher = "[{backbone: test-radio-v3-tiny, pretrained: false, name: tiny, mode: combo}]"
    argv = [
        "distill",
        "train",
        f"dataset.train_nolabel.folder_path={data.unlabeled}",
        f"dataset.knn_validation.root={data.by_pattern}",
        f"distill.teacher={teacher}",
        f"results_dir={tmp_path / 'runs'}",
        "model.backbone=test-radio-v2-tiny",
        "model.pretrained=false",
        "model.resolution=32",
        *FAST,
        "name=x",
    ]
    (result,) = run_vfm_batch([argv], tmp_path / "cli")
    assert result.code == 0, result.err
    assert "left out of train: 1 of 16 images (unreadable" in result.out and unlabeled.name in result.out
    assert "left out of val: 1 of 32 domain k-NN images (unreadable" in result.out
    recorded = json.loads((tmp_path / "runs" / "distill" / "x" / "left_out.json").read_text())
    assert sorted((r["split"], Path(r["path"]).name) for r in recorded) == [
        ("train", unlabeled.name),
        ("val", query.name),
    ]


def test_n6_n12_n14_n17_universal_refusals_name_the_place(tmp_path) -> None:
    root = make_panoptic_dataset(tmp_path / "pan", {"train": 3}, size=32)
    images, annotations, pngs = split_paths(root, "train")
    inst_root = make_instances_dataset(tmp_path / "inst", {"train": 2}, size=32)
    inst_json = inst_root / "annotations" / "instances_train.json"
    inst_images = inst_root / "images" / "train"

    def dup(d):
        d["images"][1]["id"] = d["images"][0]["id"]

    def cat(d):
        d["categories"][0]["id"] = "x"

    def info(d):
        d["annotations"][0]["segments_info"] = "none"

    def crowd(d):
        for annotation in d["annotations"]:
            for segment in annotation["segments_info"]:
                segment["iscrowd"] = 1

    cases = {"duplicate id": dup, "category id": cat, "segments_info": info, "all crowd": crowd}
    argvs = []
    for name, edit in cases.items():
        broken = _edit(annotations, edit, f"{name.replace(' ', '_')}.json")
        section = f"dataset.train={{images: {images}, annotations: {broken}, panoptic: {pngs}}}"
        argvs.append(["universal", "train", section, f"results_dir={tmp_path / 'runs'}", *TINY, *UNIVERSAL, *FAST])
    broken = _edit(inst_json, lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, "nan", 5, 6]]), "i.json")
    section = f"dataset.train={{images: {inst_images}, annotations: {broken}}}"
    argvs.append(["universal", "train", "dataset.format=coco_instances", section, *TINY, *UNIVERSAL, *FAST])
    outside = _edit(inst_json, lambda d: d["annotations"][0].update(segmentation=[[0, 0, 1e6, 0, 1e6, 1e6]]), "o.json")
    section = f"dataset.train={{images: {inst_images}, annotations: {outside}}}"
    argvs.append(["universal", "train", "dataset.format=coco_instances", section, *TINY, *UNIVERSAL, *FAST])
    results = run_vfm_batch(argvs, tmp_path / "cli")
    expected = [
        ("duplicate_id.json", "images[1]: duplicate image id", "(also images[0])"),
        ("category_id.json", "categories[0]: key 'id' must be int, got 'x'"),
        ("segments_info.json", "annotations[0]", "key 'segments_info' must be list, got 'none'"),
        ("the training split has no segments to learn from", "crowd segment(s), which are not training targets"),
        ("i.json", "annotations[0]", "segmentation[0]: key 'polygon' must be a list of numbers"),
        ("o.json", "annotations[0]", "segmentation[0]: polygon spans", "outside its image (32x32)"),
    ]
    for result, fragments in zip(results, expected, strict=True):
        assert_one_line_error(result.code, result.err, *fragments)
    assert not (tmp_path / "runs").exists()
