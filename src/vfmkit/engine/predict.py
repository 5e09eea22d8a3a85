"""The predict skeleton of every task: a checkpoint (or an exported .onnx where the task accepts one) -> one result
per readable input, written under ``predict.out`` (default ``<run>/predict``)."""

from __future__ import annotations

from pydantic import BaseModel

from vfmkit.engine.evaluate import required_checkpoint
from vfmkit.engine.resume import find_checkpoint, run_dir_of
from vfmkit.engine.taskdef import PredictResult, TaskFamily
from vfmkit.engine.trained import load_trained
from vfmkit.errors import DataError


def predict(family: TaskFamily, spec: BaseModel) -> PredictResult:
    """Run ``predict.checkpoint`` on ``predict.source``.

    Raises:
        DataError: no input could be predicted (every input unreadable or none found).
    """
    target = required_checkpoint(spec.predict.checkpoint, "predict", family.name)
    if target.suffix == ".onnx":
        taskdef = family.select(spec)
        predictor = taskdef.onnx_predictor(target)
        default_out = target.parent / "predict"
    else:
        taskdef, trained = load_trained(family, target)
        taskdef.check_compatible(spec, trained)
        predictor = taskdef.predictor(trained)
        default_out = run_dir_of(find_checkpoint(target)) / "predict"
    result = taskdef.predict(spec, predictor, spec.predict.out, default_out)
    for line in result.skipped:
        print(f"  skipped {line}")
    if result.written == 0:
        raise DataError(
            f"predict.source {spec.predict.source}: no input could be predicted ({len(result.skipped)} "
            "skipped, see above)"
        )
    return result
