"""The predict skeleton of every task: a checkpoint (or an exported .onnx where the task accepts one) -> one result
per readable input, written under ``predict.out`` (default ``<run>/predict``); the inputs left out (unreadable,
unpaired ...) are printed and recorded in ``left_out.json`` beside the results."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from vfmkit.engine.evaluate import LEFT_OUT_FILE, load_target
from vfmkit.engine.run_dir import atomic_write_text
from vfmkit.engine.taskdef import PredictResult, TaskFamily
from vfmkit.errors import DataError


def predict(family: TaskFamily, spec: BaseModel) -> PredictResult:
    """Run ``predict.checkpoint`` (or the task's pre-trained model, see
    :func:`~vfmkit.engine.evaluate.load_target`) on ``predict.source``.

    Raises:
        DataError: no input could be predicted (every input unreadable or none found).
    """
    target = spec.predict.checkpoint
    if target is not None and Path(target).suffix == ".onnx":
        taskdef = family.select(spec)
        predictor = taskdef.onnx_predictor(Path(target))
        default_out = Path(target).parent / "predict"
    else:
        taskdef, trained, base = load_target(family, spec, "predict")
        predictor = taskdef.predictor(trained)
        default_out = base / "predict"
    result = taskdef.predict(spec, predictor, spec.predict.out, default_out)
    for line in result.skipped:
        print(f"  skipped {line}")
    if result.written == 0:
        raise DataError(
            f"predict.source {spec.predict.source}: no input could be predicted ({len(result.skipped)} "
            "skipped, see above)"
        )
    folder = result.out if result.out.is_dir() else result.out.parent
    records = [{"split": "predict", "reason": line} for line in result.skipped]
    atomic_write_text(folder / LEFT_OUT_FILE, json.dumps(records, indent=2))  # the inputs left out, if any
    return result
