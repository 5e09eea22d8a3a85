"""Dense metrics against hand-computed values: confusion matrix, ignore_index, absent classes, change, ROC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfmkit.metrics.dense import ChangeClassifyMeter, ChangeSegMeter, SegmentationMeter, roc_curve

TARGET = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
PRED = torch.tensor([[[0, 1, 1], [1, 1, 2]]])
NAN = float("nan")


def test_segmentation_meter_hand_computed_with_ignore_and_absent_class() -> None:
    meter = SegmentationMeter(num_classes=4, ignore_index=255)
    meter.update(PRED, TARGET)
    out = meter.compute()
    np.testing.assert_array_equal(out["confusion"], [[1, 1, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(out["iou"], [0.5, 0.5, 0.0, NAN])
    np.testing.assert_allclose(out["precision"], [1.0, 0.5, NAN, NAN])
    np.testing.assert_allclose(out["recall"], [0.5, 1.0, 0.0, NAN])
    np.testing.assert_allclose(out["f1"], [2 / 3, 2 / 3, 0.0, NAN])
    assert out["miou"] == pytest.approx(1 / 3)  # class 3 (absent from both) excluded, class 2 counts as 0
    assert out["pixel_accuracy"] == pytest.approx(0.6)
    assert out["mean_precision"] == pytest.approx(0.75) and out["mean_f1"] == pytest.approx(4 / 9)
    np.testing.assert_array_equal(out["support"], [2, 2, 1, 0])
    as_json = meter.as_dict(["a", "b", "c", "d"])
    assert as_json["iou"][3] is None and as_json["class_names"] == ["a", "b", "c", "d"]


def test_logits_accumulate_like_labels_and_reset() -> None:
    logits = F.one_hot(PRED, 4).permute(0, 3, 1, 2).float() * 3.0
    by_logits, by_labels = SegmentationMeter(4), SegmentationMeter(4)
    for _ in range(2):
        by_logits.update(logits, TARGET)
        by_labels.update(PRED, TARGET)
    assert torch.equal(by_logits.confusion, by_labels.confusion) and int(by_logits.confusion.sum()) == 10
    by_logits.reset()
    assert int(by_logits.confusion.sum()) == 0 and math.isnan(by_logits.compute()["miou"])
    with pytest.raises(ValueError, match="do not match the target"):
        by_labels.update(PRED[:, :1], TARGET)
    with pytest.raises(ValueError, match="target values must be in 0..3"):
        by_labels.update(PRED, torch.tensor([[[0, 0, 1], [1, 7, 255]]]))


def test_change_seg_meter_binary_metrics() -> None:
    target = torch.tensor([[[0, 1, 1], [0, 1, 255]]])
    pred = torch.tensor([[[0, 1, 0], [1, 1, 1]]])
    meter = ChangeSegMeter()
    meter.update(pred, target)
    out = meter.compute()
    assert out["change_precision"] == pytest.approx(2 / 3) and out["change_recall"] == pytest.approx(2 / 3)
    assert out["change_f1"] == pytest.approx(2 / 3) and out["change_iou"] == pytest.approx(0.5)
    assert out["overall_accuracy"] == pytest.approx(0.6) and out["miou"] == pytest.approx((0.5 + 1 / 3) / 2)
    binary_logits = torch.where(pred == 1, 2.0, -2.0)[:, None]
    other = ChangeSegMeter()
    other.update(binary_logits, target)
    assert torch.equal(other.confusion, meter.confusion)
    empty = ChangeSegMeter()
    empty.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    assert math.isnan(empty.compute()["change_f1"]) and empty.compute()["overall_accuracy"] == 1.0


def test_change_classify_meter_rates_and_auc() -> None:
    meter = ChangeClassifyMeter(threshold=0.5)
    meter.update(torch.tensor([0.9, 0.2, 0.6]), torch.tensor([1, 0, 0]))
    meter.update(torch.tensor([0.4, 0.7]), torch.tensor([1, 1]))
    out = meter.compute()
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (2, 1, 1, 1)
    assert out["accuracy"] == pytest.approx(0.6) and out["defect_accuracy"] == pytest.approx(2 / 3)
    assert out["false_alarm_rate"] == pytest.approx(0.5) and out["miss_rate"] == pytest.approx(1 / 3)
    assert out["auc"] == pytest.approx(5 / 6)  # 5 of the 6 (FAIL, PASS) pairs are ranked correctly
    assert "scores" not in meter.as_dict() and len(meter.as_dict(include_scores=True)["scores"]) == 5
    logits = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    by_logits = ChangeClassifyMeter()
    by_logits.update(logits, torch.tensor([1, 0]))
    assert by_logits.compute()["accuracy"] == 1.0 and by_logits.compute()["auc"] == 1.0


def test_roc_curve_points_ties_and_one_class() -> None:
    fpr, tpr, thresholds, auc = roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert auc == pytest.approx(0.75)
    fpr, tpr, _, auc = roc_curve(np.array([0.5, 0.5]), np.array([1, 0]))
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(tpr, [0, 1])
    assert auc == pytest.approx(0.5)
    assert math.isnan(roc_curve(np.array([0.2, 0.3]), np.array([1, 1]))[3])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        roc_curve(np.array([0.2]), np.array([2]))
