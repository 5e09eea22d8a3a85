"""Classification data: class lists, folder and CSV splits, preflight, datasets and the epoch-seeded sampler."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vfmkit import load_backbone
from vfmkit.data.preprocess import preprocess_images
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.errors import DataError
from vfmkit.tasks.classify.data import (
    ClassificationDataset,
    ClassificationSplit,
    FeatureDataset,
    load_split,
    resolve_classes,
)
from vfmkit.tasks.classify.preflight import preflight
from vfmkit.tasks.classify.spec import AugmentSpec, ClassifyDataSpec

COUNTS = {"train": {"cat": 3, "dog": 2, "eel": 2}, "val": {"cat": 2, "dog": 1, "eel": 1}}


def _save_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _make_folders(root: Path, counts: dict[str, dict[str, int]] = COUNTS) -> Path:
    seed = 0
    for split, per_class in counts.items():
        for name, count in per_class.items():
            for i in range(count):
                seed += 1
                _save_image(root / split / name / f"{name}_{i}.png", seed, size=(40 + seed, 30 + 2 * seed))
    return root


def _folder_spec(root: Path, **kwargs) -> ClassifyDataSpec:
    return ClassifyDataSpec(format="folders", root=root, **kwargs)


def _listing(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def tiny_preprocessing():
    return load_backbone("test-radio-v2-tiny").preprocessing


# ----------------------------------------------------------------------------------------------- folders layout


def test_folder_layout_sorted_classes_recursive_images_only(tmp_path: Path) -> None:
    root = _make_folders(tmp_path / "data")
    _save_image(root / "train" / "dog" / "nested" / "deep.png", 99)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    _save_image(root / "train" / "dog" / ".hidden.png", 98)
    (root / "train" / ".cache").mkdir()
    spec = _folder_spec(root)
    classes = resolve_classes(spec)
    assert classes == ["cat", "dog", "eel"]
    train = load_split(spec, "train", classes)
    assert isinstance(train, ClassificationSplit) and train.name == "train" and len(train) == 8
    assert train.labels.dtype == np.int64 and train.labels.flags["C_CONTIGUOUS"]
    assert train.counts().tolist() == [3, 3, 2]
    assert train.files == sorted(train.files)
    assert root / "train" / "dog" / "nested" / "deep.png" in train.files
    assert [train.labels[train.files.index(root / "train" / name / f"{name}_0.png")] for name in classes] == [0, 1, 2]
    assert load_split(spec, "val", classes).counts().tolist() == [2, 1, 1]
    assert load_split(spec, "test", classes) is None


def test_classes_file_order_is_used_and_the_dataset_folder_is_never_written(tmp_path: Path) -> None:
    root = _make_folders(tmp_path / "data")
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("# my order\neel\n\ncat\ndog\n")
    before = _listing(root)
    spec = _folder_spec(root, classes_file=classes_file)
    assert resolve_classes(spec) == ["eel", "cat", "dog"]
    report = preflight(spec)
    assert report.classes == ["eel", "cat", "dog"]
    assert report.split("train").counts().tolist() == [2, 3, 2]
    resolve_classes(_folder_spec(root))  # sorted-names path: must not write classes.txt either
    assert _listing(root) == before
    assert not (root / "classes.txt").exists()


def test_duplicate_in_classes_file_names_both_lines(tmp_path: Path) -> None:
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("cat\ndog\ncat\n")
    spec = _folder_spec(_make_folders(tmp_path / "data"), classes_file=classes_file)
    with pytest.raises(DataError, match=r"classes\.txt:3: duplicate class name 'cat' \(first on line 1\)"):
        resolve_classes(spec)


def test_unknown_class_folder_in_val_names_the_folder(tmp_path: Path) -> None:
    root = _make_folders(tmp_path / "data")
    _save_image(root / "val" / "fox" / "fox_0.png", 7)
    spec = _folder_spec(root)
    with pytest.raises(DataError, match=re.escape(str(root / "val" / "fox")) + " is not a known class"):
        load_split(spec, "val", resolve_classes(spec))


def test_missing_train_split_and_loose_images_are_errors(tmp_path: Path) -> None:
    root = _make_folders(tmp_path / "data")
    spec = _folder_spec(root, train_split="training")
    with pytest.raises(DataError, match=r"training split folder .*training does not exist"):
        resolve_classes(spec)
    with pytest.raises(DataError, match=r"training split folder .*training does not exist"):
        load_split(spec, "train", ["cat"])
    _save_image(root / "val" / "loose.png", 5)
    with pytest.raises(DataError, match=r"loose\.png lies directly in the split folder"):
        load_split(_folder_spec(root), "val", ["cat", "dog", "eel"])


# ----------------------------------------------------------------------------------------------- CSV layout


def _make_csv_images(tmp_path: Path) -> Path:
    images = tmp_path / "imgs"
    for i in range(6):
        _save_image(images / f"im{i}.png", i)
    return images


def test_csv_names_with_header_relative_to_the_csv_folder(tmp_path: Path) -> None:
    _make_csv_images(tmp_path)
    train_csv = tmp_path / "train.csv"
    train_csv.write_text("path,label\nimgs/im0.png,dog\nimgs/im1.png,cat\n\nimgs/im2.png,dog\n")
    val_csv = tmp_path / "val.csv"
    val_csv.write_text(f"{tmp_path / 'imgs' / 'im3.png'},cat\n")
    spec = ClassifyDataSpec(format="csv", train_csv=train_csv, val_csv=val_csv)
    classes = resolve_classes(spec)
    assert classes == ["cat", "dog"]
    train = load_split(spec, "train", classes)
    assert train.files == [tmp_path / "imgs" / f"im{i}.png" for i in range(3)]
    assert train.labels.tolist() == [1, 0, 1]
    assert load_split(spec, "val", classes).labels.tolist() == [0]
    assert load_split(spec, "test", classes) is None


def test_csv_saved_with_a_byte_order_mark_reads_its_header(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: it is not part of the first column name."""
    _make_csv_images(tmp_path)
    train_csv = tmp_path / "train.csv"
    train_csv.write_text("path,label\nimgs/im0.png,dog\nimgs/im1.png,cat\n", encoding="utf-8-sig")
    spec = ClassifyDataSpec(format="csv", train_csv=train_csv)
    assert load_split(spec, "train", resolve_classes(spec)).labels.tolist() == [1, 0]


def test_csv_integer_labels_without_header_relative_to_root(tmp_path: Path) -> None:
    _make_csv_images(tmp_path)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.csv").write_text("im0.png,2\nim1.png,10\nim2.png,0\n")
    spec = ClassifyDataSpec(format="csv", root=tmp_path / "imgs", train_csv=lists / "train.csv")
    classes = resolve_classes(spec)
    assert classes == ["0", "2", "10"]  # numeric order, not string order
    train = load_split(spec, "train", classes)
    assert train.files == [tmp_path / "imgs" / f"im{i}.png" for i in range(3)]
    assert train.labels.tolist() == [1, 2, 0]  # labels matched as class names first
    (lists / "val.csv").write_text("im3.png,1\nim4.png,0\n")
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("cat\ndog\n")
    by_index = spec.model_copy(update={"val_csv": lists / "val.csv", "classes_file": classes_file})
    assert load_split(by_index, "val", ["cat", "dog"]).labels.tolist() == [1, 0]  # integer indices


def test_csv_unknown_label_names_file_and_line(tmp_path: Path) -> None:
    _make_csv_images(tmp_path)
    (tmp_path / "train.csv").write_text("imgs/im0.png,cat\nimgs/im1.png,dog\n")
    (tmp_path / "val.csv").write_text("path,label\nimgs/im2.png,cat\nimgs/im3.png,cow\n")
    spec = ClassifyDataSpec(format="csv", train_csv=tmp_path / "train.csv", val_csv=tmp_path / "val.csv")
    with pytest.raises(DataError, match=r"val\.csv:3: label 'cow' is not a known class"):
        preflight(spec)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("imgs/im1.png,cat,extra", "expected 2 columns 'path,label', got 3"),
        (",cat", "empty path"),
        ("x.png", "expected 2 columns 'path,label', got 1"),
    ],
)
def test_malformed_csv_row_names_file_and_line(tmp_path: Path, row: str, expected: str) -> None:
    (tmp_path / "train.csv").write_text(f"path,label\nimgs/im0.png,cat\n# comment\n{row}\n")
    spec = ClassifyDataSpec(format="csv", train_csv=tmp_path / "train.csv")
    with pytest.raises(DataError, match=re.escape(f"train.csv:4: {expected}")):
        resolve_classes(spec)


def test_csv_set_but_missing_is_an_error(tmp_path: Path) -> None:
    spec = ClassifyDataSpec(format="csv", train_csv=tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"dataset\.train_csv .*nope\.csv does not exist"):
        resolve_classes(spec)


# ----------------------------------------------------------------------------------------------- preflight


def test_preflight_counts_table(tmp_path: Path) -> None:
    report = preflight(_folder_spec(_make_folders(tmp_path / "data")))
    assert report.unreadable == [] and report.warnings == []
    assert report.split("train").counts().tolist() == [3, 2, 2]
    lines = report.format().splitlines()
    assert lines[0] == "images per class and split:"
    assert [line.split() for line in lines[1:]] == [
        ["class", "train", "val"],
        ["cat", "3", "2"],
        ["dog", "2", "1"],
        ["eel", "2", "1"],
        ["total", "7", "4"],
    ]


def test_preflight_lists_and_removes_unreadable_files(tmp_path: Path, capsys) -> None:
    root = _make_folders(tmp_path / "data")
    broken = root / "train" / "cat" / "broken.png"
    broken.write_bytes(b"not a png at all")
    truncated = root / "val" / "dog" / "truncated.png"
    truncated.write_bytes((root / "val" / "dog" / "dog_0.png").read_bytes()[:60])
    spec = _folder_spec(root)
    assert len(load_split(spec, "train", resolve_classes(spec))) == 8
    report = preflight(spec)
    assert {(item.split, item.path) for item in report.unreadable} == {("train", broken), ("val", truncated)}
    assert broken not in report.split("train").files and len(report.split("train")) == 7
    assert truncated not in report.split("val").files and report.split("val").counts().tolist() == [2, 1, 1]
    printed = capsys.readouterr().out
    assert "left out of train: 1 of 8 images (unreadable" in printed and str(broken) in printed
    assert "left out of val: 1 of 5 images (unreadable" in printed and str(truncated) in printed
    assert "left out (unreadable): 2 file(s), listed above" in report.format()
    unchecked = preflight(spec, check_images=False)
    assert unchecked.unreadable == [] and len(unchecked.split("train")) == 8


def test_preflight_with_given_classes_checks_only_the_requested_splits(tmp_path: Path) -> None:
    root = _make_folders(tmp_path / "data")
    spec = _folder_spec(root, train_split="missing")
    report = preflight(spec, ("val",), classes=["eel", "dog", "cat"])
    assert list(report.splits) == ["val"] and report.split("train") is None
    assert report.split("val").counts().tolist() == [1, 1, 2]
    with pytest.raises(DataError, match=r"class folder .*cat is not a known class"):
        preflight(spec, ("val",), classes=["eel", "dog"])
    with pytest.raises(DataError, match="no classes"):
        preflight(spec, ("val",), classes=[])


def test_preflight_warns_about_classes_absent_from_val_and_missing_val(tmp_path: Path) -> None:
    root = _make_folders(tmp_path / "data", {"train": {"cat": 2, "dog": 2, "eel": 1}, "val": {"cat": 1}})
    report = preflight(_folder_spec(root))
    assert len(report.warnings) == 1
    assert re.search(r"2 class\(es\) have no val images.*: dog, eel", report.warnings[0])
    assert "warnings:" in report.format()
    report = preflight(_folder_spec(root, val_split="validation"))
    assert report.split("val") is None
    assert report.warnings == [f"no val split ({root / 'validation'} not found)"]


def test_preflight_rejects_empty_or_incomplete_training_data(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"training split .*train holds no readable images"):
        preflight(_folder_spec(root))
    (root / "train" / "cat").rmdir()
    with pytest.raises(DataError, match=r"no classes found: no sub-folders of .*train"):
        preflight(_folder_spec(root))
    (root / "train" / "cat" / "bad.png").parent.mkdir()
    (root / "train" / "cat" / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"holds no readable images \(1 unreadable files left out\)"):
        preflight(_folder_spec(root))
    root = _make_folders(tmp_path / "data2")
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("cat\ndog\neel\nfox\n")
    with pytest.raises(DataError, match=r"1 class\(es\) have no training images in .*train: fox"):
        preflight(_folder_spec(root, classes_file=classes_file))


# ----------------------------------------------------------------------------------------------- datasets


def _train_split(tmp_path: Path) -> ClassificationSplit:
    spec = _folder_spec(_make_folders(tmp_path / "data"))
    return load_split(spec, "train", resolve_classes(spec))


def test_eval_items_equal_preprocess_images_exactly(tmp_path: Path, tiny_preprocessing) -> None:
    split = _train_split(tmp_path)
    for resolution in (64, 32):
        dataset = ClassificationDataset(split, resolution, train=False, seed=3)
        for index in (0, 4):
            image, label, returned = dataset[index]
            expected = preprocess_images([split.files[index]], tiny_preprocessing, resolution=resolution)[0]
            assert image.dtype == torch.float32 and image.shape == (3, resolution, resolution)
            torch.testing.assert_close(image, expected, rtol=0, atol=0)
            assert label.dtype == torch.int64 and int(label) == split.labels[index] and returned == index


def test_train_augmentation_is_a_function_of_seed_epoch_and_index(tmp_path: Path) -> None:
    split = _train_split(tmp_path)
    augment = AugmentSpec(random_resized_crop=(0.3, 1.0), hflip=0.5, color_jitter=0.4)
    first = ClassificationDataset(split, 32, train=True, augment=augment, seed=7)
    second = ClassificationDataset(split, 32, train=True, augment=augment, seed=7)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    image = first[2][0]
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is untouched
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    _ = second[5], second[0]  # fetch order does not matter
    assert torch.equal(second[2][0], image)
    second.set_epoch(1)
    assert not torch.equal(second[2][0], image)
    first.set_epoch(1)
    assert torch.equal(first[2][0], second[2][0])
    assert not torch.equal(ClassificationDataset(split, 32, train=True, augment=augment, seed=8)[2][0], image)


def test_train_without_random_ops_equals_eval(tmp_path: Path) -> None:
    split = _train_split(tmp_path)
    plain = AugmentSpec(random_resized_crop=None, hflip=0.0, color_jitter=0.0)
    train = ClassificationDataset(split, 48, train=True, augment=plain)
    evaluation = ClassificationDataset(split, 48)
    torch.testing.assert_close(train[1][0], evaluation[1][0], rtol=0, atol=0)


def test_epoch_reaches_persistent_workers(tmp_path: Path) -> None:
    split = _train_split(tmp_path)
    augment = AugmentSpec(random_resized_crop=(0.3, 1.0), hflip=0.5, color_jitter=0.2)
    dataset = ClassificationDataset(split, 32, train=True, augment=augment, seed=1)
    sampler = EpochSeededSampler(len(dataset), seed=1, dataset=dataset)
    loader = DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=2, persistent_workers=True)
    reference = ClassificationDataset(split, 32, train=True, augment=augment, seed=1)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        reference.set_epoch(epoch)
        images, labels, indices = (torch.cat(parts) for parts in zip(*list(loader), strict=True))
        assert indices.tolist() == sampler.permutation(epoch).tolist()
        expected = torch.stack([reference[int(i)][0] for i in indices])
        assert torch.equal(images, expected)
        assert labels.tolist() == split.labels[indices.numpy()].tolist()


def test_unreadable_image_at_load_time_names_the_file(tmp_path: Path) -> None:
    split = _train_split(tmp_path)
    split.files[0].write_bytes(b"corrupt")
    with pytest.raises(DataError, match=re.escape(str(split.files[0]))):
        ClassificationDataset(split, 32)[0]


def test_feature_dataset() -> None:
    features = torch.randn(5, 4)
    dataset = FeatureDataset(features, np.array([0, 1, 2, 1, 0]))
    feature, label, index = dataset[3]
    assert len(dataset) == 5 and torch.equal(feature, features[3]) and index == 3
    assert label.dtype == torch.int64 and int(label) == 1
    with pytest.raises(ValueError, match="labels must have shape"):
        FeatureDataset(features, np.zeros(4))


# ----------------------------------------------------------------------------------------------- sampler


def test_sampler_permutation_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochSeededSampler(50, seed=4)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(50)) and len(sampler) == 50
    assert epoch0 != list(range(50))
    assert list(EpochSeededSampler(50, seed=4)) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch1) == list(range(50)) and epoch1 != epoch0
    resumed = EpochSeededSampler(50, seed=4)
    resumed.set_epoch(1)
    assert list(resumed) == epoch1
    assert list(EpochSeededSampler(50, seed=5)) != epoch0
    assert list(EpochSeededSampler(0)) == []
