"""COCO segmentation (polygons, compressed and uncompressed RLE) <-> masks, and the errors that name the annotation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.tasks.universal.universal_data import uncompressed_rle

from vfmkit.data.coco_masks import mask_to_rle, segmentation_to_mask
from vfmkit.errors import DataError


def test_rle_round_trips_and_is_json_ready():
    mask = np.zeros((7, 9), dtype=bool)
    mask[1:4, 2:7] = True
    mask[5, 0] = True
    rle = mask_to_rle(mask)
    assert rle["size"] == [7, 9] and isinstance(rle["counts"], str)
    json.dumps(rle)
    assert np.array_equal(segmentation_to_mask(rle, 7, 9), mask)
    assert np.array_equal(segmentation_to_mask(uncompressed_rle(mask), 7, 9), mask)  # crowd regions' format


def test_polygons_are_rasterised():
    square = [[2, 1, 6, 1, 6, 4, 2, 4]]  # pixel-edge corners of columns 2..5, rows 1..3
    mask = segmentation_to_mask(square, 6, 8)
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:4, 2:6] = True
    assert np.array_equal(mask, expected)
    two = segmentation_to_mask([*square, [0, 5, 2, 5, 2, 6, 0, 6]], 6, 8)
    assert two.sum() == expected.sum() + 2


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ([], "non-empty list"),
        ([[1, 2, 3, 4]], "at least 3"),
        ({"size": [5, 5], "counts": "abc"}, r"RLE size \[5, 5\] differs"),
        ({"counts": [1]}, "expected polygons or an RLE"),
        ({"size": [6, 8], "counts": 3.5}, "RLE counts must be"),
    ],
)
def test_malformed_segmentations_name_the_annotation(segmentation, message):
    with pytest.raises(DataError, match=message) as info:
        segmentation_to_mask(segmentation, 6, 8, where="ann.json: annotation 7")
    assert str(info.value).startswith("ann.json: annotation 7: ")
