"""One end-to-end run of the CLI: spec init -> train -> evaluate -> predict -> export (+ onnxruntime parity) ->
predict with the .onnx file; and the CLI's error contract for classify. In-process through the CLI's ``main`` (the
fresh-process behaviour of the console script is covered in tests/cli/test_cli.py)."""

from __future__ import annotations

import csv
import json
import os

import pytest
import yaml
from tests.synthetic import make_shapes_dataset

from vfmkit.cli.main import main
from vfmkit.export.tensorrt import tensorrt_unavailable_reason


def vfm(capsys, *args, cwd) -> tuple[int, str, str]:
    """Run ``vfm args`` in ``cwd``; (exit code, stdout, stderr)."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
    finally:
        os.chdir(old)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    make_shapes_dataset(root / "data", {"train": 4, "val": 2}, size=32)
    return root


def test_classify_end_to_end(project, capsys):
    assert vfm(capsys, "spec", "init", "classify", "-o", "spec.yaml", cwd=project)[0] == 0
    spec = yaml.safe_load((project / "spec.yaml").read_text())
    assert spec["dataset"]["root"] == "data"  # relative to the spec file
    common = ["-c", "spec.yaml", "model.backbone=test-radio-v2-tiny", "model.resolution=32", "train.num_workers=0"]
    code, _, err = vfm(capsys, "classify", "train", *common, "train.epochs=1", "model.mode=finetune", cwd=project)
    assert code == 0, err
    run = project / "runs" / "classify" / "exp"
    assert (run / "checkpoints" / "best.ckpt").is_file()

    code, out, err = vfm(capsys, "classify", "evaluate", *common, f"evaluate.checkpoint={run}", cwd=project)
    assert code == 0, err
    assert "top-1" in out and "%" in out
    metrics = json.loads((run / "evaluate" / "val" / "metrics.json").read_text())
    assert metrics["images"] == 8 and len(metrics["confusion_matrix"]) == 4 and 0 <= metrics["top1"] <= 1

    predict = ["classify", "predict", *common, f"predict.checkpoint={run}", "predict.source=data/val"]
    code, _, err = vfm(capsys, *predict, "predict.out=preds.csv", cwd=project)
    assert code == 0, err
    torch_rows = list(csv.DictReader((project / "preds.csv").open()))
    assert len(torch_rows) == 8 and set(torch_rows[0]) >= {"path", "label_1", "score_1", "label_4", "score_4"}

    code, out, err = vfm(capsys, "classify", "export", *common, f"export.checkpoint={run}", cwd=project)
    assert code == 0, err
    assert "max abs diff" in out
    onnx_file = run / "export" / "model.onnx"
    assert onnx_file.is_file()

    onnx_predict = ["classify", "predict", *common, f"predict.checkpoint={onnx_file}", "predict.source=data/val"]
    code, _, err = vfm(capsys, *onnx_predict, "predict.out=preds_onnx.csv", cwd=project)
    assert code == 0, err
    onnx_rows = list(csv.DictReader((project / "preds_onnx.csv").open()))
    assert [r["label_1"] for r in onnx_rows] == [r["label_1"] for r in torch_rows]
    for a, b in zip(onnx_rows, torch_rows, strict=True):
        assert abs(float(a["score_1"]) - float(b["score_1"])) < 1e-4

    engine = [
        "classify",
        "export",
        *common,
        f"export.checkpoint={run}",
        "export.format=tensorrt",
        "export.out=trt/m.onnx",
    ]
    code, _, err = vfm(capsys, *engine, "export.precision=int8", cwd=project)
    assert code == 2 and "export.precision=int8 needs export.calibration" in err and not (project / "trt").exists()
    code, out, err = vfm(capsys, *engine, "export.precision=fp32", cwd=project)
    missing = tensorrt_unavailable_reason()
    if missing:  # one line saying what is missing, before anything is written
        assert code == 2 and err.count("\n") == 1 and missing in err and "pip install tensorrt" in err
        assert not (project / "trt").exists()
    else:
        assert code == 0, err
        assert (project / "trt" / "m.engine").is_file() and "TensorRT fp32 engine" in out


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
def test_classify_errors_are_one_line_exit_2(project, capsys, args, message):
    if not (project / "spec.yaml").exists():
        vfm(capsys, "spec", "init", "classify", "-o", "spec.yaml", cwd=project)
    code, out, err = vfm(capsys, *args, cwd=project)
    assert code == 2, (out, err)
    assert message in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1
