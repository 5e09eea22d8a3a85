"""The evaluate skeleton of every task: checkpoint -> split -> metrics.json + plots + a printed summary.

``train`` ends with the same :func:`evaluate_and_write` on the val split, so ``evaluate`` of the best checkpoint
reproduces the number ``train`` reported (same code, same units).
"""

from __future__ import annotations

import errno
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from vfmkit.data.preflight import LeftOut, left_out_dicts, recording_left_out
from vfmkit.engine.resume import run_dir_of
from vfmkit.engine.run_dir import atomic_write_text
from vfmkit.engine.taskdef import EvalResult, TaskDef, TaskFamily, Trained
from vfmkit.engine.trained import load_trained
from vfmkit.engine.weights import check_weights
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


LEFT_OUT_FILE = "left_out.json"
"""The run folder's record of every file its data preparation left out (unreadable or too small)."""


def write_left_out(path: Path, left_out: Sequence[LeftOut]) -> None:
    """Write the left-out files (a JSON list of {split, path, kind, reason}; ``[]`` when none) atomically."""
    atomic_write_text(path, json.dumps(left_out_dicts(left_out), indent=2))


def left_out_summary(left_out: Sequence[LeftOut]) -> dict[str, str]:
    """The model card's data line about left-out files (nothing when none were)."""
    if not left_out:
        return {}
    per_split = ", ".join(f"{split}: {count}" for split, count in Counter(i.split for i in left_out).items())
    return {"left out (unreadable or too small)": f"{len(left_out)} file(s) ({per_split}), listed in {LEFT_OUT_FILE}"}


def evaluate_and_write(
    taskdef: TaskDef,
    trained: Trained,
    split: Any,
    spec: BaseModel,
    split_name: str,
    out_dir: Path,
    title: str,
    left_out: Sequence[LeftOut] = (),
) -> dict:
    """Evaluate ``trained`` on ``split``; write ``out_dir/metrics.json`` and the task's plots; print the summary.

    ``metrics.json`` also lists, under ``left_out``, the files of this split the data preparation left out
    (``left_out``: what it recorded, any split; those of ``split_name`` are kept).

    Returns:
        The metrics as written (JSON values: fractions, None where undefined).
    """
    metrics = json_safe(taskdef.evaluate_split(trained, split, spec))
    metrics["left_out"] = left_out_dicts(left_out, split_name)
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


def load_target(family: TaskFamily, spec: BaseModel, action: str) -> tuple[TaskDef, Trained, Path]:
    """The model of ``<action>.checkpoint`` and the folder its results go under (its run folder); without a
    checkpoint, the task's pre-trained model (:meth:`TaskDef.pretrained_model`) and
    ``<results_dir>/<task>/pretrained/<model>``.

    A pre-trained model's weights follow the weights rule: a contradiction in the spec is refused (naming both keys)
    before anything is loaded.

    Raises:
        VfmError: no checkpoint and the task has no usable pre-trained model, or a checkpoint this spec cannot use.
    """
    value = getattr(spec, action).checkpoint
    if value is None:
        taskdef = family.select(spec)
        if type(taskdef).pretrained_model is not TaskDef.pretrained_model:  # the task offers a pre-trained model
            check_weights(taskdef, spec)
        trained = taskdef.pretrained_model(spec)
        if trained is not None:
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(taskdef.backbone_id(spec)).name)
            return taskdef, trained, Path(spec.results_dir) / family.name / "pretrained" / name
    taskdef, trained = load_trained(family, required_checkpoint(value, action, family.name))
    taskdef.check_compatible(spec, trained)
    return taskdef, trained, run_dir_of(trained.checkpoint)


def evaluate(family: TaskFamily, spec: BaseModel) -> EvalResult:
    """Metrics of ``evaluate.checkpoint`` (or of the pre-trained model, see :func:`load_target`) on
    ``evaluate.split`` of this spec's dataset, written (metrics.json and the task's plots) to ``evaluate.out`` when
    set, else to ``<run>/evaluate/<split>/``: nothing is written into the run folder when ``evaluate.out`` is
    elsewhere, so a run on read-only storage can be evaluated."""
    taskdef, trained, base = load_target(family, spec, "evaluate")
    name = spec.evaluate.split
    with recording_left_out() as left_out:
        split = taskdef.eval_split(spec, trained, name)
    out_dir = Path(spec.evaluate.out) if spec.evaluate.out is not None else base / "evaluate" / name
    source = trained.checkpoint.name if trained.checkpoint is not None else "pre-trained weights"
    title = f"{name}, {source}"
    try:
        metrics = evaluate_and_write(taskdef, trained, split, spec, name, out_dir, title, left_out)
    except OSError as exc:
        if spec.evaluate.out is not None or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise VfmError(
            f"cannot write {exc.filename or out_dir}: {exc.strerror}; set evaluate.out=<folder> to write the "
            "evaluation elsewhere"
        ) from exc
    print(f"written: {out_dir / 'metrics.json'}")
    return EvalResult(metrics, name, out_dir, trained.checkpoint)
