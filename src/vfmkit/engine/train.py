"""The train skeleton of every task: weights rule -> preflight -> seed -> build (+ init_from, activation
checkpointing) -> run folder (+ weights.json, left_out.json) -> loaders -> module -> fit -> reload the best
checkpoint -> evaluate on val (and on test) -> model card -> summary.

Val picks the best checkpoint, so its figure is optimistic (selection bias). When the dataset has a test split
(:attr:`~vfmkit.engine.taskdef.TaskDef.splits` lists ``test`` and the preflight finds it), it is checked with the
others before training and the best checkpoint is evaluated on it too (``<run>/evaluate/test/metrics.json``): the
model card and the final line give it as the unbiased figure; without one they say the val figure picked the
checkpoint."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from pydantic import BaseModel
from torch import nn

from vfmkit.data.preflight import LeftOut, recording_left_out
from vfmkit.engine.evaluate import LEFT_OUT_FILE, evaluate_and_write, left_out_summary, write_left_out
from vfmkit.engine.frozen import submodule
from vfmkit.engine.loggers import check_loggers
from vfmkit.engine.model_card import write_model_card
from vfmkit.engine.run_dir import spec_hash
from vfmkit.engine.runs import fit, open_run, process_rank
from vfmkit.engine.taskdef import TaskData, TaskDef, TaskFamily, TrainResult, headline_text
from vfmkit.engine.trained import copy_trained_weights, load_trained
from vfmkit.engine.weights import (
    WEIGHTS_FILE,
    check_weights,
    read_weights_json,
    record_built_weights,
    write_weights_json,
)
from vfmkit.errors import ConfigurationError, VfmError
from vfmkit.weights.record import WeightsRecord
from vfmkit.weights.rule import WeightsDecision, names_its_own_weights


def enable_grad_checkpointing(model: nn.Module, enable: bool = True) -> int:
    """Call ``set_grad_checkpointing(enable)`` on the outermost modules of ``model`` that have it (backbones and
    necks forward it to what they own). Returns how many were set.

    Raises:
        VfmError: nothing in the model supports activation checkpointing.
    """
    done: set[int] = set()
    count = 0
    for module in model.modules():
        if id(module) in done or not callable(getattr(module, "set_grad_checkpointing", None)):
            continue
        module.set_grad_checkpointing(enable)
        done.update(id(m) for m in module.modules())
        count += 1
    if count == 0 and enable:
        raise VfmError(f"train.activation_checkpointing: {type(model).__name__} has no blocks that can be checkpointed")
    return count


def dry_build(taskdef: TaskDef, spec: BaseModel, meta: dict) -> None:
    """Build the model on the meta device, without weights: a configuration that cannot work (a neck the backbone
    does not support, no trainable blocks ...) fails with its VfmError in seconds, before any weights are fetched."""
    with torch.device("meta"):
        taskdef.build_model(spec, meta, pretrained=False)


def build_for_training(
    family: TaskFamily, taskdef: TaskDef, spec: BaseModel, data: TaskData, decisions: list[WeightsDecision]
) -> tuple[nn.Module, list[WeightsRecord]]:
    """The model of a new run, built from the spec (every backbone's weights as ``decisions`` say), and the records
    of those weights fingerprinted as built; then started from ``train.init_from`` weights when given."""
    if taskdef.pretrained(spec) and not names_its_own_weights(taskdef.backbone_id(spec)):
        dry_build(taskdef, spec, data.meta)  # published weights may need a download: check the configuration first
    model = taskdef.build_model(spec, data.meta, pretrained=True)
    records = record_built_weights(decisions, model)
    if spec.train.init_from is not None:
        _, trained = load_trained(family, spec.train.init_from)
        taskdef.check_init_from(spec, trained, data.meta)
        copy_trained_weights(model, trained, spec.train.init_from)
    if spec.train.activation_checkpointing:
        enable_grad_checkpointing(model)
    return model, records


def prepare_data(taskdef: TaskDef, spec: BaseModel, splits=("train", "val")) -> tuple[TaskData, list[LeftOut]]:
    """The task's preflight (:meth:`TaskDef.prepare`) with every file it leaves out recorded (the shared decoding
    preflight, :mod:`vfmkit.data.preflight`); the model card's data section says how many."""
    with recording_left_out() as left_out:
        data = taskdef.prepare(spec, tuple(splits))
    data.summary = {**data.summary, **left_out_summary(left_out)}
    return data, left_out


def train(family: TaskFamily, spec: BaseModel) -> TrainResult:
    """Train as the spec says; everything goes into a run folder (what it holds: each task's page in docs/tasks/)."""
    taskdef = family.select(spec)
    leader = process_rank() == 0
    with contextlib.redirect_stdout(sys.stdout if leader else io.StringIO()):  # ranks > 0 print nothing
        decisions = check_weights(taskdef, spec)  # a contradiction fails here, before the data are read
        data, left_out = prepare_data(taskdef, spec, taskdef.splits)
        pl.seed_everything(spec.train.seed, workers=True, verbose=False)
        model, records = build_for_training(family, taskdef, spec, data, decisions if leader else [])
        check_resolution(taskdef, spec, model)
        taskdef.check_model(spec, model)
        check_loggers(spec.train.loggers)
        # the run folder is created once the model is built: a bad backbone or checkpoint leaves nothing behind
        with open_run(spec, family.name) as (run_dir, resume_from):
            print(f"run folder: {run_dir}")
            if leader:
                write_left_out(run_dir / LEFT_OUT_FILE, left_out)
            if leader and (resume_from is None or not (run_dir / WEIGHTS_FILE).is_file()):
                write_weights_json(run_dir, records, spec.train.init_from)
            result = _fit_and_evaluate(family, taskdef, spec, data, model, run_dir, resume_from, leader, left_out)
    if leader:
        print(f"done: {run_dir}{_final_figures(taskdef, spec, result)}")
    return result


def _final_figures(taskdef: TaskDef, spec: BaseModel, result: TrainResult) -> str:
    """The headline of the final line: test (unbiased) when evaluated, else val saying it picked the checkpoint."""
    keys = taskdef.headline_keys(spec)[:2]
    if result.test:
        return f"  test {headline_text(result.test, keys)} (val picked the checkpoint; test did not)"
    if result.val:
        return f"  val {headline_text(result.val, keys)} (the split that picked the checkpoint: optimistic)"
    return ""


def _fit_and_evaluate(
    family, taskdef, spec, data, model, run_dir, resume_from, leader: bool, left_out: list[LeftOut]
) -> TrainResult:
    """Fit; then rank 0 reloads the best checkpoint, evaluates it on val and test and writes the model card."""
    train_loader, val_loader = taskdef.loaders(spec, data, model)
    module = taskdef.lightning_module(spec, model, data.meta)
    checkpoints = fit(
        spec, run_dir, module, train_loader, val_loader, resume_from, taskdef.monitor, taskdef.monitor_mode
    )
    test_split = data.split("test")
    has_test = test_split is not None and len(test_split) > 0
    figures, trained = {}, None
    if leader and (val_loader is not None or has_test):
        _, trained = load_trained(family, checkpoints.best_path)
        for name, wanted in (("val", val_loader is not None), ("test", has_test)):
            if wanted:
                title = f"{name}, best checkpoint ({checkpoints.best_path.name})"
                out_dir = run_dir / "evaluate" / name
                split = data.split(name)
                figures[name] = evaluate_and_write(taskdef, trained, split, spec, name, out_dir, title, left_out)
    val, test = figures.get("val"), figures.get("test")
    if leader:
        _write_card(taskdef, spec, run_dir, data, val, test)
        taskdef.after_train(run_dir, checkpoints.best_path, trained)
    return TrainResult(run_dir, checkpoints.best_path, checkpoints.last_path, taskdef.monitor, val, test)


def check_resolution(taskdef: TaskDef, spec: BaseModel, model: nn.Module) -> None:
    """The training resolution must be a multiple of the backbone's step (patch size), checked before any run
    folder exists.

    Raises:
        VfmError: naming the key, the step and the nearest valid values.
    """
    step = submodule(model, taskdef.backbone_path).preprocessing.resolution_step
    require_multiple_of_step("model.resolution", taskdef.resolution(spec), step, taskdef.backbone_id(spec))


def require_multiple_of_step(key: str, size: int, step: int, backbone: str) -> None:
    """An input side set by ``key`` must be a multiple of a backbone's step (its patch size).

    Raises:
        ConfigurationError: naming the key, the step and the two nearest valid values.
    """
    if size % step:
        lower, upper = max(step, size // step * step), (size // step + 1) * step
        raise ConfigurationError(
            f"{key} {size} is not a multiple of {step} (the patch size of {backbone}); use {lower} or {upper}"
        )


def _write_card(
    taskdef: TaskDef, spec: BaseModel, run_dir: Path, data: TaskData, val: dict | None, test: dict | None
) -> None:
    keys = taskdef.headline_keys(spec)
    recorded = read_weights_json(run_dir)
    write_model_card(
        run_dir,
        taskdef.name,
        taskdef.backbone_id(spec),
        recorded,
        data.summary,
        None if val is None else {key: val.get(key) for key in keys},
        spec_hash(spec),
        taskdef.card_notes(spec, data.meta),
        taskdef.metric_notes,
        test_metrics=None if test is None else {key: test.get(key) for key in keys},
        monitor=taskdef.monitor,
    )
