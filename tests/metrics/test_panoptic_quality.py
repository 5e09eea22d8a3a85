"""vfmkit's panoptic quality follows panopticapi's rules; every expected value here is computed by hand from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vfmkit.errors import DataError
from vfmkit.metrics.panoptic import (
    PanopticQuality,
    Segment,
    evaluate_panoptic_files,
    id2rgb,
    merge_stuff_segments,
    read_panoptic_png,
    rgb2id,
    write_panoptic_png,
    write_panoptic_results,
)

PERSON, CAR, SKY, ROAD = 1, 2, 3, 4
CATEGORIES = {PERSON: True, CAR: True, SKY: False, ROAD: False}


def canvas(regions: dict[int, list[tuple[int, int, int, int]]], shape=(10, 10), fill: int = 0) -> np.ndarray:
    """An id map: ``{id: [(y0, y1, x0, x1), ...]}`` painted in order on ``fill``."""
    ids = np.full(shape, fill, dtype=np.int64)
    for segment_id, boxes in regions.items():
        for y0, y1, x0, x1 in boxes:
            ids[y0:y1, x0:x1] = segment_id
    return ids


def single(gt_ids, gt_segments, pred_ids, pred_segments, merge_stuff=False) -> dict:
    meter = PanopticQuality(CATEGORIES, merge_stuff=merge_stuff)
    meter.update(gt_ids, gt_segments, pred_ids, pred_segments, image="test")
    return meter.compute()


def counts(result: dict, category: int) -> tuple[int, int, int]:
    row = result["per_class"][category]
    return row["tp"], row["fp"], row["fn"]


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255], [256, 65535, 256**3 - 1]], dtype=np.int64)
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[1, 0].tolist() == [0, 1, 0]  # 256 = G 1
    assert np.array_equal(rgb2id(rgb), ids)
    assert rgb2id([1, 2, 3]) == 1 + 2 * 256 + 3 * 65536
    assert id2rgb(1 + 2 * 256 + 3 * 65536) == [1, 2, 3]
    random_ids = np.random.default_rng(0).integers(0, 256**3, (7, 5))
    assert np.array_equal(rgb2id(id2rgb(random_ids)), random_ids)
    with pytest.raises(ValueError):
        id2rgb(np.array([256**3]))


def test_png_round_trip(tmp_path):
    ids = np.array([[0, 300], [70000, 5]], dtype=np.int64)
    path = write_panoptic_png(tmp_path / "a.png", ids)
    assert np.array_equal(read_panoptic_png(path), ids)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left


def test_perfect_prediction_is_one():
    ids = canvas({10: [(0, 10, 0, 10)], 11: [(0, 4, 0, 4)], 12: [(6, 9, 6, 9)]})
    segments = [Segment(10, SKY), Segment(11, PERSON), Segment(12, CAR)]
    result = single(ids, segments, ids, segments)
    assert result["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 3}
    assert result["things"]["n"] == 2 and result["stuff"]["n"] == 1
    assert not result["per_class"][ROAD]["counted"]  # absent from both: left out of the means


def test_match_needs_iou_strictly_above_half():
    gt = canvas({1: [(0, 2, 0, 10)], 2: [(5, 7, 0, 10)]}, fill=4)  # two people of 20 px on a road
    pred = canvas({5: [(0, 2, 0, 8)], 6: [(5, 7, 0, 5), (8, 10, 0, 5)]})  # 16 of 20 px; 10 of 20 px + 10 on road
    gt_segments = [Segment(1, PERSON), Segment(2, PERSON), Segment(4, ROAD)]
    result = single(gt, gt_segments, pred, [Segment(5, PERSON), Segment(6, PERSON)])
    # pred 5: IoU 16 / 20 = 0.8 -> TP; pred 6: IoU 10 / (20 + 20 - 10) = 1/3 -> FP, gt 2 -> FN
    assert counts(result, PERSON) == (1, 1, 1)
    assert result["per_class"][PERSON]["pq"] == pytest.approx(0.8 / (1 + 0.5 + 0.5))
    assert result["per_class"][PERSON]["sq"] == pytest.approx(0.8)
    assert result["per_class"][PERSON]["rq"] == pytest.approx(0.5)
    exactly_half = canvas({5: [(0, 1, 0, 10)]})  # 10 of person 1's 20 px, nothing outside: IoU 0.5 is no match
    result = single(gt, gt_segments, exactly_half, [Segment(5, PERSON)])
    assert counts(result, PERSON) == (0, 1, 2)


def test_void_pixels_leave_the_union():
    gt = canvas({1: [(0, 2, 0, 5)]})  # 10 px person, the rest VOID
    pred = canvas({7: [(0, 2, 0, 5), (4, 6, 0, 6)]})  # the person + 12 px on VOID
    result = single(gt, [Segment(1, PERSON)], pred, [Segment(7, PERSON)])
    # without the rule IoU = 10 / 22 < 0.5; union = 22 + 10 - 10 - 12 = 10 -> IoU 1
    assert counts(result, PERSON) == (1, 0, 0)
    assert result["per_class"][PERSON]["sq"] == pytest.approx(1.0)


def test_unmatched_prediction_mostly_on_void_is_not_a_false_positive():
    gt = canvas({4: [(5, 10, 0, 10)]})  # road on the lower half, VOID above
    gt_segments = [Segment(4, ROAD)]
    on_void = canvas({4: [(5, 10, 0, 10)], 8: [(3, 5, 0, 3), (5, 6, 0, 4)]}, fill=4)  # car: 6 VOID + 4 road px
    half = canvas({4: [(5, 10, 0, 10)], 8: [(4, 5, 0, 5), (5, 6, 0, 5)]}, fill=4)  # car: 5 VOID + 5 road px
    for pred, expected_fp in ((on_void, 0), (half, 1)):
        pred_segments = [Segment(4, ROAD), Segment(8, CAR)]
        result = single(gt, gt_segments, pred, pred_segments)
        assert counts(result, CAR) == (0, expected_fp, 0)  # 6/10 > 0.5 ignored; 5/10 is not > 0.5: FP


def test_crowd_regions_are_never_false_negatives_and_absorb_their_class():
    gt = canvas({4: [(0, 10, 0, 10)], 30: [(0, 6, 0, 6)]})  # road with a 36 px crowd of cars
    gt_segments = [Segment(4, ROAD), Segment(30, CAR, iscrowd=1)]
    # car: 12 px on the crowd + 10 px road; person: 12 px on the (car) crowd + 5 px road
    pred = canvas({4: [(0, 10, 0, 10)], 8: [(0, 4, 0, 3), (8, 10, 0, 5)], 9: [(4, 6, 0, 6), (9, 10, 5, 10)]})
    pred_segments = [Segment(4, ROAD), Segment(8, CAR), Segment(9, PERSON)]
    result = single(gt, gt_segments, pred, pred_segments)
    assert counts(result, CAR) == (0, 0, 0)  # crowd: no FN; the car is 12/22 on its crowd -> ignored
    assert counts(result, PERSON) == (0, 1, 0)  # a crowd absorbs only its own category
    # a car exactly on the crowd is still not a TP (crowd regions are never matched)
    result = single(gt, gt_segments, canvas({4: [(0, 10, 0, 10)], 8: [(0, 6, 0, 6)]}), pred_segments[:2])
    assert counts(result, CAR) == (0, 0, 0)


def test_void_and_crowd_add_up():
    gt = canvas({4: [(3, 10, 0, 10)], 30: [(3, 5, 0, 3)]})  # VOID rows 0-2, a 6 px car crowd, road
    gt_segments = [Segment(4, ROAD), Segment(30, CAR, iscrowd=1)]
    # car prediction: 3 px VOID (row 2, x 0-2) + 3 px crowd (row 3, x 0-2) + 4 px road (row 5, x 0-3)
    pred = canvas({4: [(0, 10, 0, 10)], 8: [(2, 4, 0, 3), (5, 6, 0, 4)]})
    result = single(gt, gt_segments, pred, [Segment(4, ROAD), Segment(8, CAR)])
    assert counts(result, CAR) == (0, 0, 0)  # (3 + 3) / 10 > 0.5


def test_only_the_last_crowd_region_of_a_category_counts_as_in_panopticapi():
    gt = canvas({4: [(0, 10, 0, 10)], 30: [(0, 4, 0, 5)], 31: [(6, 10, 6, 10)]})
    gt_segments = [Segment(4, ROAD), Segment(30, CAR, iscrowd=1), Segment(31, CAR, iscrowd=1)]
    pred = canvas({4: [(0, 10, 0, 10)], 8: [(0, 4, 0, 5)]})  # exactly on the first crowd region
    result = single(gt, gt_segments, pred, [Segment(4, ROAD), Segment(8, CAR)])
    assert counts(result, CAR) == (0, 1, 0)


def test_stuff_is_merged_per_category():
    gt = canvas({3: [(0, 4, 0, 10)], 4: [(4, 10, 0, 10)]})  # sky 40 px over road 60 px
    pred = canvas({20: [(0, 4, 0, 6)], 21: [(0, 4, 6, 10)], 4: [(4, 10, 0, 10)]})  # sky split 24 + 16 px
    gt_segments = [Segment(3, SKY), Segment(4, ROAD)]
    pred_segments = [Segment(20, SKY), Segment(21, SKY), Segment(4, ROAD)]
    merged = single(gt, gt_segments, pred, pred_segments, merge_stuff=True)
    assert counts(merged, SKY) == (1, 0, 0) and merged["per_class"][SKY]["pq"] == pytest.approx(1.0)
    as_given = single(gt, gt_segments, pred, pred_segments)  # the default: panopticapi's pq_compute
    assert counts(as_given, SKY) == (1, 1, 0)  # 24/40 = 0.6 matches, the 16 px part is a FP
    assert as_given["per_class"][SKY]["pq"] == pytest.approx(0.6 / 1.5)
    assert as_given["per_class"][SKY]["sq"] == pytest.approx(0.6)
    assert as_given["per_class"][SKY]["rq"] == pytest.approx(1 / 1.5)
    ids, segments = merge_stuff_segments(pred, pred_segments, CATEGORIES)
    assert set(np.unique(ids)) == {4, 20} and [s.id for s in segments] == [20, 4]


def test_things_are_not_merged():
    gt = canvas({1: [(0, 4, 0, 4)], 2: [(6, 10, 6, 10)]})
    pred = canvas({5: [(0, 4, 0, 4)], 6: [(6, 10, 6, 10)]})
    segments = [Segment(5, PERSON), Segment(6, PERSON)]
    result = single(gt, [Segment(1, PERSON), Segment(2, PERSON)], pred, segments)
    assert counts(result, PERSON) == (2, 0, 0)


def test_means_over_things_stuff_and_all_by_hand():
    meter = PanopticQuality(CATEGORIES, names={PERSON: "person"})
    # image 1: person TP with IoU 0.8 (16/20), sky TP IoU 1, a false car on the rest of the person
    gt1 = canvas({1: [(0, 2, 0, 10)], 3: [(2, 10, 0, 10)]})
    pred1 = canvas({5: [(0, 2, 0, 8)], 3: [(2, 10, 0, 10)], 9: [(0, 2, 8, 10)]})
    meter.update(
        gt1, [Segment(1, PERSON), Segment(3, SKY)], pred1, [Segment(5, PERSON), Segment(3, SKY), Segment(9, CAR)]
    )
    # image 2: a missed person, road TP with IoU 0.9 (45 / 50)
    gt2 = canvas({1: [(0, 2, 0, 5)], 4: [(5, 10, 0, 10)]})
    pred2 = canvas({4: [(5, 10, 0, 9)]})
    meter.update(gt2, [Segment(1, PERSON), Segment(4, ROAD)], pred2, [Segment(4, ROAD)])
    result = meter.compute()
    person = 0.8 / (1 + 0 + 0.5)  # tp 1, fn 1
    car = 0.0  # fp 1
    sky, road = 1.0, 0.9
    assert result["per_class"][PERSON]["pq"] == pytest.approx(person)
    assert result["per_class"][PERSON]["name"] == "person"
    assert result["per_class"][CAR]["pq"] == car and result["per_class"][CAR]["sq"] == 0.0
    assert result["things"]["pq"] == pytest.approx((person + car) / 2)
    assert result["stuff"]["pq"] == pytest.approx((sky + road) / 2)
    assert result["all"]["pq"] == pytest.approx((person + car + sky + road) / 4)
    assert result["all"]["sq"] == pytest.approx((0.8 + 0 + 1 + 0.9) / 4)
    assert result["all"]["rq"] == pytest.approx((1 / 1.5 + 0 + 1 + 1) / 4)
    assert result["images"] == 2
    empty = PanopticQuality(CATEGORIES).compute()
    assert empty["all"]["n"] == 0 and np.isnan(empty["all"]["pq"])


def test_ground_truth_area_from_the_annotation_is_used():
    gt = canvas({1: [(0, 2, 0, 5)]})  # 10 px in the PNG
    pred = canvas({5: [(0, 2, 0, 5)]})
    # the JSON says 25 px: IoU = 10 / (10 + 25 - 10) = 0.4 -> no match, as panopticapi would score it
    result = single(gt, [Segment(1, PERSON, area=25)], pred, [Segment(5, PERSON)])
    assert counts(result, PERSON) == (0, 1, 1)


def test_inconsistent_predictions_are_refused():
    gt = canvas({1: [(0, 2, 0, 5)]})
    pred = canvas({5: [(0, 2, 0, 5)], 6: [(5, 6, 0, 2)]})
    meter = PanopticQuality(CATEGORIES)
    with pytest.raises(DataError, match="image 7: predicted segment id 6 is in the PNG but not in segments_info"):
        meter.update(gt, [Segment(1, PERSON)], pred, [Segment(5, PERSON)], image=7)
    with pytest.raises(DataError, match=r"ids \[9\] are in segments_info but not in the PNG"):
        meter.update(gt, [Segment(1, PERSON)], pred, [Segment(5, PERSON), Segment(6, CAR), Segment(9, CAR)])
    with pytest.raises(DataError, match="unknown category_id 99"):
        meter.update(gt, [Segment(1, PERSON)], pred, [Segment(5, PERSON), Segment(6, 99)])
    with pytest.raises(DataError, match="differ in size"):
        meter.update(gt, [Segment(1, PERSON)], pred[:5], [Segment(5, PERSON)])


def test_results_files_round_trip_through_the_file_evaluator(tmp_path):
    gt_ids = canvas({1: [(0, 2, 0, 10)], 3: [(5, 10, 0, 10)]})
    gt_dir = tmp_path / "gt"
    write_panoptic_png(gt_dir / "a.png", gt_ids)
    gt_segments = [{"id": 1, "category_id": PERSON, "iscrowd": 0}, {"id": 3, "category_id": SKY, "iscrowd": 0}]
    categories = [{"id": c, "name": str(c), "isthing": int(t)} for c, t in CATEGORIES.items()]
    gt_json = {"annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": gt_segments}]}
    (tmp_path / "gt.json").write_text(json.dumps({**gt_json, "categories": categories}))
    pred_ids = canvas({5: [(0, 2, 0, 8)], 3: [(5, 10, 0, 10)]})
    pred_segments = [{"id": 5, "category_id": PERSON, "score": 0.9}, {"id": 3, "category_id": SKY}]
    out = write_panoptic_results(tmp_path / "pred.json", [(1, "a.png", pred_ids, pred_segments)], categories)
    written = json.loads(out.read_text())
    info = written["annotations"][0]["segments_info"][0]
    assert info == {"id": 5, "category_id": PERSON, "score": 0.9, "area": 16, "bbox": [0, 0, 8, 2], "iscrowd": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt", "gt.json", "pred", "pred.json"]
    result = evaluate_panoptic_files(tmp_path / "gt.json", out, gt_dir)
    assert result["per_class"][PERSON]["pq"] == pytest.approx(0.8)
    assert result["stuff"]["pq"] == pytest.approx(1.0)
    other = json.loads(out.read_text())
    other["annotations"][0]["image_id"] = 2
    (tmp_path / "bad.json").write_text(json.dumps(other))
    with pytest.raises(DataError, match="no prediction for the image with id 1"):
        evaluate_panoptic_files(tmp_path / "gt.json", tmp_path / "bad.json", gt_dir, tmp_path / "pred")
