"""One end-to-end run of the CLI: spec init -> train -> evaluate -> predict -> export (+ onnxruntime parity) ->
predict with the .onnx file; and the CLI's error contract for classify."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml
from tests.synthetic import make_shapes_dataset


def vfm(*args, cwd):
    result = subprocess.run(
        [sys.executable, "-m", "vfmkit.cli.main", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    make_shapes_dataset(root / "data", {"train": 8, "val": 4}, size=32)
    return root


def test_classify_end_to_end(project):
    assert vfm("spec", "init", "classify", "-o", "spec.yaml", cwd=project).returncode == 0
    spec = yaml.safe_load((project / "spec.yaml").read_text())
    assert spec["dataset"]["root"] == "data"  # relative to the spec file
    common = ["-c", "spec.yaml", "model.backbone=test-radio-v2-tiny", "model.resolution=32", "train.num_workers=0"]
    train = vfm("classify", "train", *common, "train.epochs=1", "model.mode=finetune", cwd=project)
    assert train.returncode == 0, train.stderr
    run = project / "runs" / "classify" / "exp"
    assert (run / "checkpoints" / "best.ckpt").is_file()

    evaluate = vfm("classify", "evaluate", *common, f"evaluate.checkpoint={run}", cwd=project)
    assert evaluate.returncode == 0, evaluate.stderr
    assert "top-1" in evaluate.stdout
    metrics = json.loads((run / "evaluate" / "val" / "metrics.json").read_text())
    assert metrics["images"] == 16 and len(metrics["confusion_matrix"]) == 4

    predict = vfm(
        "classify",
        "predict",
        *common,
        f"predict.checkpoint={run}",
        "predict.source=data/val",
        "predict.out=preds.csv",
        cwd=project,
    )
    assert predict.returncode == 0, predict.stderr
    torch_rows = list(csv.DictReader((project / "preds.csv").open()))
    assert len(torch_rows) == 16 and set(torch_rows[0]) >= {"path", "label_1", "score_1", "label_4", "score_4"}

    export = vfm("classify", "export", *common, f"export.checkpoint={run}", cwd=project)
    assert export.returncode == 0, export.stderr
    assert "max abs diff" in export.stdout
    onnx_file = run / "export" / "model.onnx"
    assert onnx_file.is_file()

    onnx_predict = vfm(
        "classify",
        "predict",
        *common,
        f"predict.checkpoint={onnx_file}",
        "predict.source=data/val",
        "predict.out=preds_onnx.csv",
        cwd=project,
    )
    assert onnx_predict.returncode == 0, onnx_predict.stderr
    onnx_rows = list(csv.DictReader((project / "preds_onnx.csv").open()))
    assert [r["label_1"] for r in onnx_rows] == [r["label_1"] for r in torch_rows]
    for a, b in zip(onnx_rows, torch_rows, strict=True):
        assert abs(float(a["score_1"]) - float(b["score_1"])) < 1e-4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["classify", "train", "-c", "missing.yaml"], "spec file not found"),
        (["classify", "train", "-c", "spec.yaml", "train.epoch=2"], "did you mean 'train.epochs'"),
        (["classify", "evaluate", "-c", "spec.yaml"], "evaluate.checkpoint is required"),
        (["classify", "train", "-c", "spec.yaml", "dataset.root=nowhere"], "nowhere"),
        (["classify", "fly", "-c", "spec.yaml"], "No such command"),
        (["spec", "init", "nosuchtask"], "unknown task 'nosuchtask'"),
    ],
)
def test_classify_errors_are_one_line_exit_2(project, args, message):
    if not (project / "spec.yaml").exists():
        vfm("spec", "init", "classify", "-o", "spec.yaml", cwd=project)
    result = vfm(*args, cwd=project)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
