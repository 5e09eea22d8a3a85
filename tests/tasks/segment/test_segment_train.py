"""Semantic segmentation through the real Task API and CLI: it learns, infers at full resolution (resize and
sliding windows), predicts masks and overlays, exports to ONNX with parity, and reports bad data clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tests.synthetic import make_segmentation_dataset

from vfmkit import Task
from vfmkit.engine.trained import load_trained
from vfmkit.tasks import get_task
from vfmkit.tasks.segment.infer import SegmentRunner, use_sliding
from vfmkit.tasks.segment.model import ExportableSegmenter
from vfmkit.tasks.segment.spec import InferenceSpec


def _load(checkpoint):
    return load_trained(get_task("segment"), checkpoint)[1]


PALETTE = "[{name: background, id: 0}, {name: circle, id: 1}, {name: square, id: 2}]"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_segmentation_dataset(tmp_path_factory.mktemp("seg"), {"train": 32, "val": 8})


def _task(root, results, *overrides):
    base = [
        f"dataset.root={root}",
        f"dataset.palette={PALETTE}",
        f"results_dir={results}",
        "model.backbone=test-radio-v2-tiny",
        "model.resolution=64",
        "model.neck_channels=64",
        "model.decoder_channels=64",
        "train.batch_size=8",
        "train.num_workers=0",
        "train.optimizer.lr=0.002",
        "dataset.augment.scale_range=[0.75, 1.5]",
    ]
    return Task("segment", None, [*base, *overrides])


@pytest.fixture(scope="module")
def adapter_run(shapes, tmp_path_factory):
    """The common case: frozen backbone, trainable ViT-Adapter + SegFormer head."""
    return _task(
        shapes,
        tmp_path_factory.mktemp("runs"),
        "model.neck=vit_adapter",
        "model.freeze_backbone=true",
        "train.epochs=4",
    ).train()


def test_vit_adapter_on_a_frozen_backbone_learns(adapter_run):
    assert adapter_run.val["miou"] >= 0.7, adapter_run.val
    run = adapter_run.run_dir
    for name in (
        "metrics.csv",
        "plots/loss.png",
        "MODEL_CARD.md",
        "checkpoints/best.ckpt",
        "evaluate/val/metrics.json",
        "evaluate/val/confusion_matrix.png",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "evaluate" / "val" / "metrics.json").read_text())
    assert set(metrics) >= {"miou", "iou", "precision", "recall", "f1", "pixel_accuracy", "class_names"}


def test_simple_pyramid_fine_tuning_learns(shapes, tmp_path):
    result = _task(
        shapes,
        tmp_path,
        "model.neck=simple_pyramid",
        "model.freeze_backbone=false",
        "train.optimizer.backbone_lr_scale=1.0",
        "train.epochs=4",
    ).train()
    assert result.val["miou"] >= 0.7, result.val


def test_sliding_window_inference_on_larger_images(adapter_run, tmp_path):
    runner = SegmentRunner.from_trained(_load(adapter_run.best_checkpoint))
    big = make_segmentation_dataset(tmp_path / "big", {"val": 4}, size=112, seed=5)
    assert use_sliding(112, 112, 64, InferenceSpec()) and not use_sliding(64, 48, 64, InferenceSpec())
    image = torch.from_numpy(np.array(Image.open(big / "images" / "val" / "000.png"))).permute(2, 0, 1)[None] / 255
    logits = runner.logits(image.float(), InferenceSpec(mode="sliding"))
    assert logits.shape == (1, 3, 112, 112)
    task = _task(big, tmp_path / "runs", f"evaluate.checkpoint={adapter_run.run_dir}", "inference.mode=sliding")
    metrics = task.evaluate().metrics
    assert metrics["miou"] >= 0.5, metrics  # objects are larger than at training time: a harder, honest check
    assert (adapter_run.run_dir / "evaluate" / "val" / "metrics.json").is_file()


def test_predict_writes_index_masks_and_overlays(adapter_run, shapes, tmp_path):
    result = _task(
        shapes,
        tmp_path,
        f"predict.checkpoint={adapter_run.run_dir}",
        f"predict.source={shapes / 'images' / 'val'}",
        f"predict.out={tmp_path / 'pred'}",
    ).predict()
    out = result.out
    assert result.written == 8 and not result.skipped
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == 8 and len(list((out / "overlays").glob("*.png"))) == 16
    predicted = np.asarray(Image.open(masks[0]))
    truth = np.asarray(Image.open(shapes / "masks" / "val" / masks[0].name))
    assert predicted.shape == truth.shape and set(np.unique(predicted)) <= {0, 1, 2}
    assert (predicted == truth).mean() > 0.8


def test_export_matches_pytorch(adapter_run, shapes, tmp_path):
    from vfmkit.export.runtime import OnnxModel

    result = _task(
        shapes, tmp_path, f"export.checkpoint={adapter_run.run_dir}", f"export.out={tmp_path / 'seg.onnx'}"
    ).export()
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    model = OnnxModel(result.path)
    assert model.input_names == ["image"] and model.output_names == ["logits"]
    assert model.metadata["labels"] == ["background", "circle", "square"]
    image = torch.rand(3, 3, 64, 64)
    onnx_logits = model(image.numpy())["logits"]
    with torch.inference_mode():
        torch_logits = ExportableSegmenter(_load(adapter_run.best_checkpoint).model)(image)
    assert onnx_logits.shape == (3, 3, 64, 64)
    assert np.abs(onnx_logits - torch_logits.numpy()).max() <= 1e-4


def test_unknown_mask_value_is_a_one_line_error(shapes, tmp_path):
    bad = make_segmentation_dataset(tmp_path / "bad", {"train": 2, "val": 1})
    mask = np.asarray(Image.open(bad / "masks" / "train" / "001.png")).copy()
    mask[0, 0] = 7
    Image.fromarray(mask, mode="L").save(bad / "masks" / "train" / "001.png")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vfmkit.cli.main",
            "segment",
            "train",
            f"dataset.root={bad}",
            f"dataset.palette={PALETTE}",
            f"results_dir={tmp_path / 'runs'}",
            "model.backbone=test-radio-v2-tiny",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "001.png" in result.stderr and "7" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing written before the data is known to be good


def test_init_from_starts_from_trained_weights(adapter_run, shapes, tmp_path):
    from vfmkit.weights.safe_load import load_pickle_checkpoint

    result = _task(
        shapes,
        tmp_path,
        "model.neck=vit_adapter",
        "model.freeze_backbone=true",
        "train.epochs=1",
        "train.optimizer.lr=1e-12",
        f"train.init_from={adapter_run.run_dir}",
    ).train()
    start = load_pickle_checkpoint(adapter_run.best_checkpoint)["state_dict"]
    end = load_pickle_checkpoint(result.last_checkpoint)["state_dict"]
    key = "model.head.classifier.weight"
    torch.testing.assert_close(end[key], start[key], rtol=0, atol=1e-6)
    assert abs(result.val["miou"] - adapter_run.val["miou"]) < 0.05
