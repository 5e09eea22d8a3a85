"""The predict skeleton of every task: a checkpoint (or an exported .onnx where the task accepts one) -> one result
per readable input, written under ``predict.out`` (default ``<run>/predict``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from vfmkit.engine.evaluate import load_target
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
    return result
