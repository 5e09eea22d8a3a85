"""COCO instances reader: sparse ids, negatives, raw segmentation kept, and one clear refusal per problem naming the
JSON file and the key / index / id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vfmkit.data.coco import BOX_SLACK, merge_categories, read_coco
from vfmkit.errors import DataError

CATEGORIES = [{"id": 7, "name": "triangle"}, {"id": 1, "name": "circle"}, {"id": 3, "name": "square"}]


def _write(tmp_path: Path, data: dict | str, images: tuple[str, ...] = ("a.png", "b.png", "c.png")) -> Path:
    folder = tmp_path / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for name in images:
        Image.new("RGB", (40, 30)).save(folder / name)
    path = tmp_path / "ann.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _valid() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 11, "file_name": "b.png", "width": 40, "height": 30},
            {"id": 12, "file_name": "c.png", "width": 40, "height": 30},
        ],
        "categories": [dict(c) for c in CATEGORIES],
        "annotations": [
            {
                "id": 1,
                "image_id": 10,
                "category_id": 3,
                "bbox": [1, 2, 10, 8],
                "area": 80,
                "iscrowd": 0,
                "segmentation": [[1, 2, 11, 2, 11, 10]],
            },
            {"id": 2, "image_id": 10, "category_id": 7, "bbox": [20, 5, 20.5, 10]},
            {
                "id": 3,
                "image_id": 12,
                "category_id": 1,
                "bbox": [0, 0, 5, 5],
                "iscrowd": 1,
                "segmentation": {"size": [30, 40], "counts": "abc"},
            },
        ],
    }


def test_reads_sparse_ids_negatives_and_raw_segmentation(tmp_path):
    dataset = read_coco(_write(tmp_path, _valid()), tmp_path / "images")
    assert dataset.category_ids == [1, 3, 7] and dataset.class_names == ["circle", "square", "triangle"]
    assert dataset.num_classes == 3 and dataset.num_negatives == 1
    first, second = dataset.annotations[10]
    assert (first.category_id, first.label, first.bbox, first.area) == (3, 1, (1.0, 2.0, 10.0, 8.0), 80.0)
    assert first.segmentation == [[1, 2, 11, 2, 11, 10]]
    assert second.label == 2 and second.bbox == (20.0, 5.0, 20.0, 10.0)  # 0.5 px past the border is clipped
    assert second.area == pytest.approx(200.0)  # default area = w * h
    crowd = dataset.annotations[12][0]
    assert crowd.iscrowd and crowd.segmentation == {"size": [30, 40], "counts": "abc"}
    assert dataset.images[0].path == tmp_path / "images" / "a.png"
    gt = dataset.to_coco_dict()
    assert [c["id"] for c in gt["categories"]] == [1, 3, 7] and len(gt["annotations"]) == 3
    assert gt["annotations"][2]["iscrowd"] == 1 and "segmentation" not in gt["annotations"][1]


def _broken(change) -> dict:
    data = _valid()
    change(data)
    return data


REFUSALS = {
    "invalid json": ('{"images": [', r"ann\.json: not valid JSON \(line 1, column \d+"),
    "missing images": (_broken(lambda d: d.pop("images")), r"ann\.json: top level: missing key 'images'"),
    "missing bbox": (
        _broken(lambda d: d["annotations"][1].pop("bbox")),
        r"annotations\[1\] \(id 2\): missing key 'bbox'",
    ),
    "mistyped width": (
        _broken(lambda d: d["images"][2].update(width="40")),
        r"images\[2\]: key 'width' must be int, got '40'",
    ),
    "unknown category": (
        _broken(lambda d: d["annotations"][0].update(category_id=5)),
        r"annotations\[0\] \(id 1\): category_id 5 is not in categories \(ids 1, 3, 7\)",
    ),
    "unknown image": (
        _broken(lambda d: d["annotations"][2].update(image_id=99)),
        r"annotations\[2\] \(id 3\): image_id 99 is not in images",
    ),
    "box outside": (
        _broken(lambda d: d["annotations"][1].update(bbox=[35, 5, 10, 10])),
        r"annotations\[1\] \(id 2\): bbox \[35, 5, 10, 10\] .* outside its image 10 \(40x30\)",
    ),
    "zero width": (
        _broken(lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 4])),
        r"annotations\[0\] \(id 1\): bbox \[1, 1, 0, 4\] must have a positive width and height",
    ),
    "negative height": (
        _broken(lambda d: d["annotations"][0].update(bbox=[1, 1, 4, -2])),
        r"annotations\[0\] \(id 1\): bbox .* positive width and height",
    ),
    "bbox not 4 numbers": (
        _broken(lambda d: d["annotations"][0].update(bbox=[1, 1, 4])),
        r"annotations\[0\] \(id 1\): bbox must be 4 numbers",
    ),
    "duplicate image id": (_broken(lambda d: d["images"][1].update(id=10)), r"images\[1\]: duplicate image id 10"),
    "duplicate category id": (
        _broken(lambda d: d["categories"].append({"id": 3, "name": "again"})),
        r"categories\[3\]: duplicate category id 3",
    ),
    "duplicate annotation id": (
        _broken(lambda d: d["annotations"][1].update(id=1)),
        r"annotations\[1\]: duplicate annotation id 1",
    ),
    "annotations not a list": (
        _broken(lambda d: d.update(annotations={})),
        r"annotations: expected a list, got an object",
    ),
    "N3 negative area": (
        _broken(lambda d: d["annotations"][0].update(area=-1)),
        r"annotations\[0\] \(id 1\): area -1 must be positive \(COCO evaluation ignores",
    ),
    "N3 zero area": (_broken(lambda d: d["annotations"][1].update(area=0)), r"annotations\[1\] \(id 2\): area 0 must"),
    "nan area": (_broken(lambda d: d["annotations"][1].update(area=float("nan"))), r"'area' must be a finite number"),
    "N6 polygon of strings": (
        _broken(lambda d: d["annotations"][0].update(segmentation=[["a", "b", "c", "d", "e", "f"]])),
        r"annotations\[0\] \(id 1\): segmentation\[0\]: key 'polygon' must be a list of numbers",
    ),
    "N6 polygon with nan": (
        _broken(lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, "nan", 5, 6]])),
        r"segmentation\[0\]: key 'polygon' must be a list of numbers",
    ),
    "polygon too short": (
        _broken(lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4]])),
        r"segmentation\[0\]: a polygon needs an even number >= 6 of coordinates, got 4",
    ),
    "N17 polygon outside the image": (
        _broken(lambda d: d["annotations"][0].update(segmentation=[[0, 0, 1e6, 0, 1e6, 1e6]])),
        r"segmentation\[0\]: polygon spans x 0\.\.1e\+06, y 0\.\.1e\+06, outside its image \(40x30\)",
    ),
    "RLE of another size": (
        _broken(lambda d: d["annotations"][0].update(segmentation={"size": [5, 5], "counts": [25]})),
        r"RLE segmentation size \[5, 5\] differs from its image's \[height, width\] \[30, 40\]",
    ),
    "no categories": (_broken(lambda d: d.update(categories=[])), r"categories: the list is empty"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_the_file_and_the_place(tmp_path, case):
    data, pattern = REFUSALS[case]
    path = _write(tmp_path, data)
    with pytest.raises(DataError, match=pattern) as info:
        read_coco(path, tmp_path / "images")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_image_files_are_refused_with_the_image_id(tmp_path):
    path = _write(tmp_path, _valid(), images=("a.png", "c.png"))
    with pytest.raises(DataError, match=r"1 image file\(s\) not found .* image id 11 file_name 'b.png'"):
        read_coco(path, tmp_path / "images")
    assert read_coco(path, tmp_path / "images", check_files=False).num_negatives == 1


def test_missing_json_file(tmp_path):
    with pytest.raises(DataError, match="COCO annotation file not found"):
        read_coco(tmp_path / "nope.json", tmp_path)


def test_slack_is_one_pixel(tmp_path):
    inside = _broken(lambda d: d["annotations"][1].update(bbox=[-BOX_SLACK, 5, 10, 10]))
    assert read_coco(_write(tmp_path, inside), tmp_path / "images").annotations[10][1].bbox[0] == 0.0


def test_sources_must_share_categories(tmp_path):
    first = read_coco(_write(tmp_path / "a", _valid()), tmp_path / "a" / "images")
    renamed = _broken(lambda d: d["categories"][0].update(name="pyramid"))
    second = read_coco(_write(tmp_path / "b", renamed), tmp_path / "b" / "images")
    assert [c.id for c in merge_categories([first, first])] == [1, 3, 7]
    with pytest.raises(DataError, match=r"b/ann\.json: categories differ from .*a/ann\.json"):
        merge_categories([first, second])
