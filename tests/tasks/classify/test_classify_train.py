"""Classification training through the real Task API: it learns, caches features, resumes exactly."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import pytest
import torch
from tests.synthetic import make_shapes_dataset

from vfmkit import Task
from vfmkit.errors import VfmError
from vfmkit.models.backbones.radio.model import RadioBackbone
from vfmkit.weights.safe_load import load_pickle_checkpoint


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("small"), {"train": 8, "val": 4}, size=32)


def _task(root, results, *overrides):
    base = [
        f"dataset.root={root}",
        f"results_dir={results}",
        "model.backbone=test-radio-v2-tiny",
        "model.resolution=64",
        "train.num_workers=0",
        "train.batch_size=32",
    ]
    return Task("classify", None, [*base, *overrides])


def test_finetune_reaches_90_percent(shapes, tmp_path):
    task = _task(
        shapes,
        tmp_path,
        "model.mode=finetune",
        "train.epochs=6",
        "train.optimizer.lr=0.003",
        "train.optimizer.backbone_lr_scale=1.0",
    )
    result = task.train()
    assert result.val["top1"] >= 0.9, result.val
    run = result.run_dir
    for name in (
        "spec.resolved.yaml",
        "env.json",
        "metrics.csv",
        "MODEL_CARD.md",
        "plots/loss.png",
        "plots/metrics.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "evaluate/val/metrics.json",
        "evaluate/val/confusion_matrix.png",
    ):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])
    assert "val top-1" not in (run / "MODEL_CARD.md").read_text() and "top1: " in (run / "MODEL_CARD.md").read_text()


def _count_backbone_forwards(monkeypatch) -> list[int]:
    calls = [0]
    original = RadioBackbone.forward

    def counting(self, images):
        calls[0] += 1
        return original(self, images)

    monkeypatch.setattr(RadioBackbone, "forward", counting)
    return calls


def test_linear_probe_runs_the_backbone_once(shapes, tmp_path, monkeypatch):
    calls = _count_backbone_forwards(monkeypatch)
    task = _task(shapes, tmp_path, "model.mode=linear_probe", "train.epochs=5", "train.optimizer.lr=0.01")
    first = task.train()
    extraction, evaluation = 8 + 3, 2  # 240 + 80 images at batch 32; final eval of 80 images at batch 64
    assert calls[0] == extraction + evaluation  # no forward in any of the 5 epochs
    assert first.val["top1"] > 0.5  # chance is 25%
    calls[0] = 0
    second = _task(shapes, tmp_path, "model.mode=linear_probe", "train.epochs=5", "train.optimizer.lr=0.01").train()
    assert calls[0] == evaluation  # features came from the cache
    assert second.run_dir != first.run_dir
    assert second.val["top1"] == first.val["top1"]  # same data, same seed, same cached features
    # the tiny test backbone is random-init (no published source): the frozen-backbone rule keeps it in checkpoints
    state = load_pickle_checkpoint(first.best_checkpoint)["state_dict"]
    assert any(k.startswith("model.backbone.") for k in state) and "model.head.2.weight" in state


def test_linear_probe_on_onnxruntime_int8_features(shapes, tmp_path, monkeypatch):
    monkeypatch.setenv("VFMKIT_CACHE", str(tmp_path / "onnx-cache"))
    calls = _count_backbone_forwards(monkeypatch)
    probe = ("model.mode=linear_probe", "train.epochs=5", "train.optimizer.lr=0.01")
    result = _task(shapes, tmp_path, *probe, "model.feature_runtime=onnxruntime", "model.feature_int8=true").train()
    assert result.val["top1"] > 0.5  # chance is 25%
    # PyTorch ran the final evaluation (2 batches) and the export's tracing and checks (a few), not the 11 batches
    # of feature extraction: onnxruntime computed the cached features
    assert calls[0] < 8 + 3
    cached = sorted(p.name for p in (tmp_path / ".cache" / "features").glob("*.safetensors"))
    assert len(cached) == 2  # train and val, keyed apart from PyTorch features by the runner's cache tag
    assert any((tmp_path / "onnx-cache").rglob("*.onnx"))
    with pytest.raises(VfmError, match="model.feature_int8=true needs model.feature_runtime=onnxruntime"):
        _task(shapes, tmp_path, *probe, "model.feature_int8=true").train()


class _Crash(RuntimeError):
    pass


class _CrashAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            raise _Crash("simulated kill after epoch 1")


def _final_weights(run_dir):
    return load_pickle_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def test_resume_continues_exactly(small_shapes, tmp_path, monkeypatch):
    args = (
        "model.mode=finetune",
        "train.epochs=3",
        "train.batch_size=8",
        "model.resolution=32",
        "model.head_dropout=0.2",
        "train.ema.enabled=true",
    )
    uninterrupted = _task(small_shapes, tmp_path / "a", *args).train()

    import vfmkit.engine.runs as runs

    original = runs.build_trainer

    def crashing(*a, **kw):
        return original(*a, **{**kw, "extra_callbacks": [_CrashAfterFirstEpoch()]})

    monkeypatch.setattr(runs, "build_trainer", crashing)
    with pytest.raises(_Crash):
        _task(small_shapes, tmp_path / "b", *args).train()
    monkeypatch.setattr(runs, "build_trainer", original)
    crashed_run = tmp_path / "b" / "classify" / "exp"
    assert load_pickle_checkpoint(crashed_run / "checkpoints" / "last.ckpt")["epoch"] == 0
    resumed = _task(small_shapes, tmp_path / "b", *args, f"train.resume={crashed_run}").train()
    assert resumed.run_dir == crashed_run
    expected, got = _final_weights(uninterrupted.run_dir), _final_weights(crashed_run)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
    rows = list(csv.DictReader((crashed_run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]


def test_resume_refuses_a_changed_spec_and_points_to_init_from(small_shapes, tmp_path):
    args = ("model.mode=finetune", "train.epochs=1", "train.batch_size=8", "model.resolution=32")
    first = _task(small_shapes, tmp_path, *args).train()
    with pytest.raises(VfmError, match=r"train.epochs: 1 -> 3.*train.init_from="):
        _task(
            small_shapes,
            tmp_path,
            "model.mode=finetune",
            "train.epochs=3",
            "train.batch_size=8",
            "model.resolution=32",
            f"train.resume={first.run_dir}",
        ).train()
    again = _task(
        small_shapes,
        tmp_path,
        "model.mode=finetune",
        "train.epochs=1",
        "train.batch_size=8",
        "model.resolution=32",
        "train.optimizer.lr=1e-12",
        f"train.init_from={first.run_dir}",
    ).train()
    assert again.run_dir != first.run_dir
    start, end = _final_weights(first.run_dir), _final_weights(again.run_dir)
    key = "model.head.2.weight"
    torch.testing.assert_close(end[key], start[key], rtol=0, atol=1e-6)  # started from the trained weights


def test_a_bad_backbone_leaves_no_run_folder(small_shapes, tmp_path):
    from vfmkit.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="c-radio-v9"):
        _task(small_shapes, tmp_path, "model.backbone=c-radio-v9-b").train()
    assert not (tmp_path / "classify").exists()
