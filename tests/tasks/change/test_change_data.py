"""Change-detection data: LEVIR-CD lists and labels, the joint pair transform, the golden-vs-test CSV format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from vfmkit.errors import DataError
from vfmkit.tasks.change.data import ChangeSegDataset, load_change_label, load_levir_split, preflight_change
from vfmkit.tasks.change.data_csv import ChangeClassifyDataset, load_change_csv_split
from vfmkit.tasks.change.spec import ChangeDataSpec

# ------------------------------------------------------------------------------------------------------- LEVIR-CD


def _pair(size=(40, 32), seed=0) -> tuple[Image.Image, Image.Image, np.ndarray]:
    """A: textured background; B: A plus a white box; the label marks the box."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 120, (size[1], size[0], 3), dtype=np.uint8)
    b = a.copy()
    x, y = (int(v) for v in rng.integers(2, min(size) // 2, 2))
    b[y : y + 10, x : x + 12] = 255
    label = np.zeros((size[1], size[0]), dtype=np.uint8)
    label[y : y + 10, x : x + 12] = 255
    return Image.fromarray(a), Image.fromarray(b), label


def _levir(root: Path, splits=(("train", 3), ("val", 2)), with_ext=True) -> Path:
    for folder in ("A", "B", "label", "list"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    seed = 0
    for split, count in splits:
        names = []
        for _ in range(count):
            seed += 1
            a, b, label = _pair(seed=seed)
            name = f"tile_{seed}.png"
            a.save(root / "A" / name)
            b.save(root / "B" / name)
            Image.fromarray(label).save(root / "label" / name)
            names.append(name if with_ext else name[:-4])
        (root / "list" / f"{split}.txt").write_text("# names\n" + "\n".join(names) + "\n\n")
    return root


def test_levir_list_loading_and_binary_labels(tmp_path: Path) -> None:
    root = _levir(tmp_path, with_ext=False)
    spec = ChangeDataSpec(root=root)
    train = load_levir_split(spec, "train")
    assert len(train) == 3 and train.a.dtype.kind == "U"
    a, b, label = train.paths(1)
    assert (a.parent.name, b.parent.name, label.parent.name, a.name) == ("A", "B", "label", "tile_2.png")
    mask = load_change_label(label)
    assert mask.dtype == np.int64 and set(np.unique(mask).tolist()) == {0, 1} and int(mask.sum()) == 120
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "ones.png")
    np.testing.assert_array_equal(load_change_label(tmp_path / "ones.png"), mask)
    assert load_levir_split(spec, "test") is None
    report = preflight_change(spec, ("train", "val", "test"))
    assert report.stats["train"] == {"pairs": 3, "changed_pixels": 360, "pixels": 3 * 40 * 32}
    assert "3 pairs" in report.format() and "test" not in report.splits  # an optional split: absent, unreported
    assert not any("test" in w for w in report.warnings)


def test_levir_errors_name_files_and_lines(tmp_path: Path) -> None:
    root = _levir(tmp_path)
    (root / "B" / "tile_2.png").unlink()
    with pytest.raises(DataError, match=r"list/train\.txt:3: 'tile_2\.png': missing B/tile_2\.png"):
        load_levir_split(ChangeDataSpec(root=root), "train")
    bad = np.zeros((32, 40), dtype=np.uint8)
    bad[0, :3] = [0, 128, 255]
    Image.fromarray(bad).save(root / "label" / "tile_4.png")
    with pytest.raises(DataError, match=r"tile_4\.png holds values \[0, 128, 255\]"):
        preflight_change(ChangeDataSpec(root=root), ("val",))
    Image.fromarray(np.zeros((32, 40), dtype=np.uint8)).save(root / "label" / "tile_4.png")
    Image.fromarray(np.zeros((30, 40), dtype=np.uint8)).save(root / "label" / "tile_5.png")
    with pytest.raises(DataError, match=r"differ in size: .*tile_5\.png is 40x32.*label/tile_5\.png is 40x30"):
        preflight_change(ChangeDataSpec(root=root), ("val",))
    with pytest.raises(DataError, match=r"label/tile_5\.png is \(30, 40\)"):
        ChangeSegDataset(load_levir_split(ChangeDataSpec(root=root), "val"), 16)[1]
    with pytest.raises(DataError, match="training list file .* does not exist"):
        load_levir_split(ChangeDataSpec(root=tmp_path / "empty"), "train")


def test_pair_transform_is_identical_for_a_and_b(tmp_path: Path) -> None:
    root = _levir(tmp_path)
    (root / "B" / "tile_1.png").write_bytes((root / "A" / "tile_1.png").read_bytes())
    augment = {"scale_range": [0.7, 1.5], "hflip": 0.5, "vflip": 0.5, "color_jitter": 0.4}
    spec = ChangeDataSpec(root=root, augment=augment)
    dataset = ChangeSegDataset(load_levir_split(spec, "train"), 24, train=True, augment=spec.augment, seed=3)
    outputs = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        image_a, image_b, mask, index = dataset[0]
        assert image_a.shape == image_b.shape == (3, 24, 24) and mask.shape == (24, 24) and index == 0
        assert torch.equal(image_a, image_b)
        outputs.add(round(float(image_a.sum()), 3))
    assert len(outputs) == 4


def test_change_mask_follows_the_changed_region(tmp_path: Path) -> None:
    root = _levir(tmp_path)
    augment = {"scale_range": [0.8, 1.3], "scale_reference": "image", "hflip": 0.5, "vflip": 0.5}
    spec = ChangeDataSpec(root=root, augment=augment)
    dataset = ChangeSegDataset(load_levir_split(spec, "train"), 32, train=True, augment=spec.augment)
    ious = []
    for epoch in range(6):
        dataset.set_epoch(epoch)
        image_a, image_b, mask, _ = dataset[1]
        changed, marked = (image_b - image_a).abs().amax(0) > 0.3, mask == 1
        if marked.sum() >= 20:
            ious.append(float((changed & marked).sum() / (changed | marked).sum()))
    assert len(ious) >= 3 and min(ious) > 0.7
    image_a, _, mask, _ = ChangeSegDataset(load_levir_split(spec, "val"), 16)[0]
    assert image_a.shape == (3, 16, 16) and mask.shape == (32, 40)


# ------------------------------------------------------------------------------------------------ golden vs test

LIGHTS = ["_L0", "_L1"]


def _solid(path: Path, value: tuple[int, int, int], size=(20, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, value).save(path)


def _csv_dataset(root: Path, rows: list[str], objects=("obj1", "obj2", "obj3", "obj4")) -> Path:
    """Test images in test/<obj><light>.png (value 10*obj + light), goldens in golden/ (value 100 + ...)."""
    for k, obj in enumerate(objects, start=1):
        for light, suffix in enumerate(LIGHTS):
            _solid(root / "images" / "test" / f"{obj}{suffix}.png", (10 * k + light, 0, 0))
            _solid(root / "images" / "golden" / f"{obj}{suffix}.png", (100 + 10 * k + light, 0, 0))
    csv_file = root / "train.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    return csv_file


ROWS = [
    "input_path,golden_path,label,object_name",
    "test,golden,PASS,obj1",
    "test,golden,fail,obj2",
    "",
    "test,golden,1,obj3",
    "test,golden,0,obj4",
]


def _csv_spec(root: Path, csv_file: Path, **kwargs) -> ChangeDataSpec:
    images = root / "images"
    return ChangeDataSpec(format="csv", train_csv=csv_file, image_root=images, light_conditions=LIGHTS, **kwargs)


def test_csv_rows_labels_and_light_condition_expansion(tmp_path: Path) -> None:
    csv_file = _csv_dataset(tmp_path, ROWS)
    split = load_change_csv_split(_csv_spec(tmp_path, csv_file), "train")
    assert split.labels.tolist() == [0, 1, 1, 0] and split.lines.tolist() == [2, 3, 5, 6]
    assert [p.name for p in split.test_files(2)] == ["obj3_L0.png", "obj3_L1.png"]
    test, golden, label, index = ChangeClassifyDataset(split, 8)[1]
    assert test.shape == golden.shape == (6, 8, 8) and label.dtype == torch.int64 and int(label) == 1 and index == 1
    red = [round(float(test[3 * light, 0, 0]) * 255) for light in range(2)]
    assert red == [20, 21] and round(float(golden[3, 0, 0]) * 255) == 121
    report = preflight_change(_csv_spec(tmp_path, csv_file), ("train",))
    assert report.stats["train"] == {"PASS": 2, "FAIL": 2} and "PASS 2, FAIL 2" in report.format()


def test_csv_saved_with_a_byte_order_mark_reads_its_header(tmp_path: Path) -> None:
    csv_file = _csv_dataset(tmp_path, ROWS)
    csv_file.write_text(csv_file.read_text(), encoding="utf-8-sig")
    assert load_change_csv_split(_csv_spec(tmp_path, csv_file), "train").labels.tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("test,golden,PASS", r"train\.csv:3: expected 4 columns .* got 3"),
        ("test,golden,MAYBE,obj2", r"train\.csv:3: unknown label 'MAYBE'; expected PASS or FAIL"),
        ("test,,PASS,obj2", r"train\.csv:3: empty golden_path"),
    ],
)
def test_csv_row_errors_carry_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    csv_file = _csv_dataset(tmp_path, ["input_path,golden_path,label,object_name", "test,golden,PASS,obj1", row])
    with pytest.raises(DataError, match=message):
        load_change_csv_split(_csv_spec(tmp_path, csv_file), "train")


def test_csv_preflight_lists_missing_files_and_needs_both_classes(tmp_path: Path) -> None:
    csv_file = _csv_dataset(tmp_path, ROWS)
    (tmp_path / "images" / "golden" / "obj3_L1.png").unlink()
    with pytest.raises(DataError, match=r"train\.csv:5: missing .*golden/obj3_L1\.png"):
        preflight_change(_csv_spec(tmp_path, csv_file), ("train",))
    only_pass = tmp_path / "pass.csv"
    only_pass.write_text("test,golden,PASS,obj1\ntest,golden,PASS,obj2\n")
    with pytest.raises(DataError, match="has no FAIL samples; both classes are needed"):
        preflight_change(_csv_spec(tmp_path, only_pass), ("train",))


def test_multi_golden_and_joint_transform_across_test_and_goldens(tmp_path: Path) -> None:
    csv_file = _csv_dataset(tmp_path, ROWS)
    spec = _csv_spec(tmp_path, csv_file, num_golden=3)
    split = load_change_csv_split(spec, "train")
    assert split.golden_pool[str(tmp_path / "images" / "golden")] == ["obj1", "obj2", "obj3", "obj4"]
    assert split.golden_objects(1) == ["obj2", "obj1", "obj3"]
    test, golden, _, _ = ChangeClassifyDataset(split, 8)[1]
    assert test.shape == (6, 8, 8) and golden.shape == (3, 6, 8, 8)
    assert [round(float(g[0, 0, 0]) * 255) for g in golden] == [120, 110, 130]
    train = ChangeClassifyDataset(split, 8, train=True, seed=1)
    picks = set()
    for epoch in range(6):
        train.set_epoch(epoch)
        _, golden, _, _ = train[1]
        picks.add(tuple(round(float(g[0, 0, 0]) * 255) for g in golden))
        assert all(p[0] == 120 for p in picks)
    assert len(picks) > 1
    too_many = _csv_spec(tmp_path, csv_file, num_golden=5)
    with pytest.raises(DataError, match=r"holds 4 object\(s\) with every lighting condition; num_golden 5"):
        preflight_change(too_many, ("train",))


def test_classify_joint_transform_is_identical_for_test_and_golden(tmp_path: Path) -> None:
    root = tmp_path
    pixels = np.random.default_rng(0).integers(0, 255, (16, 20, 3), dtype=np.uint8)
    for folder in ("test", "golden"):
        for suffix in LIGHTS:
            (root / "images" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / "images" / folder / f"obj1{suffix}.png")
    csv_file = root / "train.csv"
    csv_file.write_text("test,golden,FAIL,obj1\n")
    augment = {"scale_range": [0.8, 1.2], "hflip": 0.5, "vflip": 0.5, "color_jitter": 0.5}
    spec = _csv_spec(root, csv_file, augment=augment)
    dataset = ChangeClassifyDataset(load_change_csv_split(spec, "train"), 12, train=True, augment=spec.augment)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        test, golden, _, _ = dataset[0]
        assert torch.equal(test, golden) and torch.equal(test[:3], test[3:])


def test_change_spec_checks() -> None:
    with pytest.raises(ValidationError, match="train_csv is required"):
        ChangeDataSpec(format="csv")
    with pytest.raises(ValidationError, match="duplicate light condition"):
        ChangeDataSpec(root=".", light_conditions=["_a", "_a"])
    with pytest.raises(ValidationError, match="root is required"):
        ChangeDataSpec()
