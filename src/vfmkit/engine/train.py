"""The train skeleton of every task: weights rule -> preflight -> seed -> build (+ init_from, activation
checkpointing) -> run folder (+ weights.json) -> loaders -> module -> fit -> reload the best checkpoint -> evaluate
on val -> model card -> summary."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from pydantic import BaseModel
from torch import nn

from vfmkit.engine.evaluate import evaluate_and_write
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


def train(family: TaskFamily, spec: BaseModel) -> TrainResult:
    """Train as the spec says; everything goes into a run folder (see README)."""
    taskdef = family.select(spec)
    leader = process_rank() == 0
    with contextlib.redirect_stdout(sys.stdout if leader else io.StringIO()):  # ranks > 0 print nothing
        decisions = check_weights(taskdef, spec)  # a contradiction fails here, before the data are read
        data = taskdef.prepare(spec, ("train", "val"))
        pl.seed_everything(spec.train.seed, workers=True, verbose=False)
        model, records = build_for_training(family, taskdef, spec, data, decisions if leader else [])
        check_resolution(taskdef, spec, model)
        taskdef.check_model(spec, model)
        check_loggers(spec.train.loggers)
        # the run folder is created once the model is built: a bad backbone or checkpoint leaves nothing behind
        with open_run(spec, family.name) as (run_dir, resume_from):
            print(f"run folder: {run_dir}")
            if leader and (resume_from is None or not (run_dir / WEIGHTS_FILE).is_file()):
                write_weights_json(run_dir, records, spec.train.init_from)
            result = _fit_and_evaluate(family, taskdef, spec, data, model, run_dir, resume_from, leader)
    if leader:
        val = result.val
        print(f"done: {run_dir}" + (f"  val {headline_text(val, taskdef.headline_keys(spec)[:2])}" if val else ""))
    return result


def _fit_and_evaluate(family, taskdef, spec, data, model, run_dir, resume_from, leader: bool) -> TrainResult:
    """Fit; then rank 0 reloads the best checkpoint, evaluates it on val and writes the model card."""
    train_loader, val_loader = taskdef.loaders(spec, data, model)
    module = taskdef.lightning_module(spec, model, data.meta)
    checkpoints = fit(
        spec, run_dir, module, train_loader, val_loader, resume_from, taskdef.monitor, taskdef.monitor_mode
    )
    val, trained = None, None
    if leader and val_loader is not None:
        _, trained = load_trained(family, checkpoints.best_path)
        title = f"val, best checkpoint ({checkpoints.best_path.name})"
        val = evaluate_and_write(taskdef, trained, data.split("val"), spec, "val", run_dir / "evaluate" / "val", title)
    if leader:
        _write_card(taskdef, spec, run_dir, data, val)
        taskdef.after_train(run_dir, checkpoints.best_path, trained)
    return TrainResult(run_dir, checkpoints.best_path, checkpoints.last_path, taskdef.monitor, val)


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


def _write_card(taskdef: TaskDef, spec: BaseModel, run_dir: Path, data: TaskData, val: dict | None) -> None:
    if val is None:
        metrics = {"validation": "none (no val split)"}
    else:
        metrics = {key: val.get(key) for key in taskdef.headline_keys(spec)}
    recorded = read_weights_json(run_dir)
    write_model_card(
        run_dir,
        taskdef.name,
        taskdef.backbone_id(spec),
        recorded,
        data.summary,
        metrics,
        spec_hash(spec),
        taskdef.card_notes(spec, data.meta),
        taskdef.metric_notes,
    )
