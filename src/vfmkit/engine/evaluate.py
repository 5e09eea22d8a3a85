"""The evaluate skeleton of every task: checkpoint -> split -> metrics.json + plots + a printed summary.

``train`` ends with the same :func:`evaluate_and_write` on the val split, so ``evaluate`` of the best checkpoint
reproduces the number ``train`` reported (same code, same units).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from vfmkit.engine.resume import run_dir_of
from vfmkit.engine.run_dir import atomic_write_text
from vfmkit.engine.taskdef import EvalResult, TaskDef, TaskFamily, Trained
from vfmkit.engine.trained import load_trained
from vfmkit.errors import VfmError


def json_safe(value: Any) -> Any:
    """Metrics as JSON values: arrays become lists, NaN and inf become None (undefined), numpy scalars plain."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_and_write(
    taskdef: TaskDef, trained: Trained, split: Any, spec: BaseModel, split_name: str, out_dir: Path, title: str
) -> dict:
    """Evaluate ``trained`` on ``split``; write ``out_dir/metrics.json`` and the task's plots; print the summary.

    Returns:
        The metrics as written (JSON values: fractions, None where undefined).
    """
    metrics = json_safe(taskdef.evaluate_split(trained, split, spec))
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    taskdef.write_plots(out_dir, metrics, trained, title)
    for line in taskdef.metric_lines(split_name, metrics, trained):
        print(line)
    return metrics


def required_checkpoint(value: Path | None, action: str, task: str) -> Path:
    """``<action>.checkpoint`` or a one-line error saying what it takes."""
    if value is None:
        raise VfmError(f"{action}.checkpoint is required: a run folder (runs/{task}/exp) or a .ckpt file")
    return Path(value)


def evaluate(family: TaskFamily, spec: BaseModel) -> EvalResult:
    """Metrics of ``evaluate.checkpoint`` on ``evaluate.split`` of this spec's dataset, written to
    ``<run>/evaluate/<split>/`` (metrics.json and the task's plots)."""
    checkpoint = required_checkpoint(spec.evaluate.checkpoint, "evaluate", family.name)
    taskdef, trained = load_trained(family, checkpoint)
    taskdef.check_compatible(spec, trained)
    name = spec.evaluate.split
    split = taskdef.eval_split(spec, trained, name)
    out_dir = run_dir_of(trained.checkpoint) / "evaluate" / name
    metrics = evaluate_and_write(taskdef, trained, split, spec, name, out_dir, f"{name}, {trained.checkpoint.name}")
    print(f"written: {out_dir / 'metrics.json'}")
    return EvalResult(metrics, name, out_dir, trained.checkpoint)
