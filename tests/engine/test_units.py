"""One unit for every metric: fractions in every file, percent only in printed lines (with a %), undefined metrics
as null in JSON, empty cells in metrics.csv, gaps in plots, and a reason in the model card."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import torch

from vfmkit.engine.callbacks import MetricsCsv, PlainProgress
from vfmkit.engine.evaluate import json_safe
from vfmkit.engine.model_card import write_model_card
from vfmkit.engine.plots import _series
from vfmkit.engine.taskdef import format_metric, headline_text


def test_printed_rates_are_percent_with_a_sign_and_the_rest_plain() -> None:
    assert format_metric("top1", 0.98755) == "98.76%"
    assert format_metric("change_f1", None) == "-" and format_metric("miou", math.nan) == "-"
    assert format_metric("auc", 0.5) == "0.5" and format_metric("val/loss", 1.25) == "1.25"
    assert headline_text({"miou": 0.5, "pixel_accuracy": 1.0}, ("miou", "pixel_accuracy")) == (
        "miou 50.00%  pixel_accuracy 100.00%"
    )


def test_undefined_metrics_are_null_in_json() -> None:
    data = json_safe({"precision": np.float64("nan"), "iou": np.array([0.5, np.nan]), "n": np.int64(3)})
    assert json.loads(json.dumps(data)) == {"precision": None, "iou": [0.5, None], "n": 3}


def _trainer(metrics: dict, epoch: int) -> SimpleNamespace:
    tensors = {k: torch.tensor(v) for k, v in metrics.items()}
    return SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        current_epoch=epoch,
        max_epochs=2,
        callback_metrics=tensors,
        optimizers=[],
    )


def test_undefined_metrics_are_empty_csv_cells_and_gaps_in_plots(tmp_path, capsys) -> None:
    writer = MetricsCsv(tmp_path)
    for epoch, precision in enumerate([0.5, math.nan, 0.75]):
        trainer = _trainer({"val/change_precision": precision, "train/loss_epoch": 1.0 / (epoch + 1)}, epoch)
        writer.on_train_epoch_start(trainer, None)
        writer.on_train_epoch_end(trainer, None)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["val/change_precision"] for r in rows] == ["0.5", "", "0.75"]
    epochs, values = _series(rows, "val/change_precision")
    assert epochs == [1, 2, 3] and values[0] == 0.5 and math.isnan(values[1]) and values[2] == 0.75
    assert (tmp_path / "plots" / "metrics.png").is_file()
    PlainProgress().on_train_epoch_end(_trainer({"val/miou": 0.25, "val/auc": 0.5}, 0), None)
    assert "val/miou 25.00%" in capsys.readouterr().out


def test_model_card_metrics_are_fractions_and_say_why_one_is_undefined(tmp_path) -> None:
    path = write_model_card(
        tmp_path,
        "change",
        "test-radio-v2-tiny",
        None,
        {"variant": "segment"},
        {"change_f1": None, "miou": 0.8125},
        "0" * 64,
        ["a note"],
        {"change_f1": "no changed pixel in the targets"},
    )
    text = path.read_text()
    assert "- miou: 0.8125" in text
    assert "- change_f1: undefined (no changed pixel in the targets)" in text


def test_model_card_gives_the_test_figure_as_unbiased_and_says_val_picked_the_checkpoint(tmp_path) -> None:
    common = (tmp_path, "classify", "test-radio-v2-tiny", False, {}, {"top1": 0.75}, "0" * 64)
    text = write_model_card(*common, test_metrics={"top1": 0.5}, monitor="val/top1").read_text()
    test_part, val_part = text.split("Validation split")
    assert "Test split (not used to pick the checkpoint: the unbiased figure):" in test_part
    assert "- top1: 0.5000" in test_part and "- top1: 0.7500" in val_part
    assert "(it picked the checkpoint by `val/top1`, so it reads optimistic)" in val_part
    text = write_model_card(*common, monitor="val/top1").read_text()
    assert "Test split" not in text and "It also picked the checkpoint by `val/top1`, so these figures are" in text
    text = write_model_card(*common[:5], None, common[6]).read_text()
    assert "- validation: none (no val split)" in text
