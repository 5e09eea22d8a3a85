"""The image ids of prediction results (:mod:`vfmkit.data.prediction_images`): an annotation file's own ids, else
1..N in listing order, assigned before any image is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vfmkit.data.prediction_images import decoded_batches, prediction_images
from vfmkit.errors import DataError


def _images(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 4), (10, 20, 30)).save(folder / name)


def test_a_folder_numbers_its_images_1_to_n_in_sorted_path_order(tmp_path: Path) -> None:
    _images(tmp_path / "photos", ["b.png", "a.png", "sub/000000000100.png", ".hidden/x.png"])
    images = prediction_images(tmp_path / "photos")
    assert [(i.id, i.path.relative_to(tmp_path / "photos").as_posix()) for i in images] == [
        (1, "a.png"),
        (2, "b.png"),
        (3, "sub/000000000100.png"),  # a numeric stem is not an id: one rule for every name
    ]
    assert images[0].file_name == str(tmp_path / "photos" / "a.png")
    listed = tmp_path / "list.txt"
    listed.write_text("photos/b.png\nphotos/a.png\n")
    assert [(i.id, i.path.name) for i in prediction_images(listed)] == [(1, "b.png"), (2, "a.png")]  # the file's order


def test_an_annotation_file_keeps_its_ids_when_the_dataset_names_it(tmp_path: Path) -> None:
    _images(tmp_path / "val", ["x.png", "y.png"])
    annotations = tmp_path / "val.json"
    entries = [{"id": 42, "file_name": "y.png", "width": 6, "height": 4}, {"id": 7, "file_name": "x.png", "width": 6}]
    annotations.write_text(json.dumps({"images": entries}))
    with pytest.raises(DataError, match=r"val.json: images\[1\]: missing key 'height'"):
        prediction_images(annotations, {annotations: tmp_path / "val"})
    entries[1]["height"] = 4
    annotations.write_text(json.dumps({"images": entries}))
    images = prediction_images(annotations, {annotations: tmp_path / "val"})
    assert [(i.id, i.path, i.file_name) for i in images] == [
        (42, tmp_path / "val" / "y.png", "y.png"),
        (7, tmp_path / "val" / "x.png", "x.png"),
    ]
    with pytest.raises(DataError, match=r"val.json is an annotation file that the dataset does not name.*other.json"):
        prediction_images(annotations, {tmp_path / "other.json": tmp_path / "val"})


def test_an_unreadable_image_is_skipped_and_keeps_its_id_unused(tmp_path: Path) -> None:
    _images(tmp_path, ["a.png", "c.png"])
    (tmp_path / "b.png").write_bytes(b"not an image")
    skipped: list[str] = []
    batches = list(decoded_batches(prediction_images(tmp_path), 2, skipped))
    assert [[(image.id, picture.size) for image, picture in batch] for batch in batches] == [
        [(1, (6, 4))],
        [(3, (6, 4))],
    ]
    assert len(skipped) == 1 and "b.png" in skipped[0]
