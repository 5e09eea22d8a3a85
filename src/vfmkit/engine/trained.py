"""Rebuilding a trained model from any task's training checkpoint (read safely, weights only).

Checkpoints hold ``hyper_parameters`` = {task, variant, spec, meta, vfmkit}, the module's ``state_dict`` (the model
under ``model.``) and, when the frozen-backbone rule left the backbone out, a ``frozen_backbone`` record (see
:mod:`vfmkit.engine.frozen`). Checkpoints of vfmkit 0.1 (``classes`` instead of ``meta``, the model under
``classifier.`` / ``segmenter.``, frozen published backbones left out without a record) still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from vfmkit.engine.frozen import check_backbone_weights, records_of
from vfmkit.engine.resume import find_checkpoint
from vfmkit.engine.taskdef import TaskDef, TaskFamily, Trained
from vfmkit.errors import VfmError, WeightsError
from vfmkit.weights.safe_load import load_pickle_checkpoint

_LEGACY_PREFIXES = ("classifier.", "segmenter.")


def read_training_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(hyper-parameters, state dict, whole payload) of a vfmkit training checkpoint.

    Raises:
        WeightsError: unreadable, unsafe, or not a vfmkit training checkpoint.
    """
    payload = load_pickle_checkpoint(path)
    hparams = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    if not isinstance(hparams, dict) or not isinstance(hparams.get("spec"), dict) or "state_dict" not in payload:
        raise WeightsError(f"{path}: not a vfmkit training checkpoint (no spec in its hyper_parameters)")
    return hparams, payload["state_dict"], payload


def checkpoint_summary(hparams: dict[str, Any]) -> tuple[str, str]:
    """(task, backbone) a checkpoint's hyper-parameters name ("?" when unknown)."""
    spec = hparams.get("spec", {})
    task = hparams.get("task") or spec.get("task") or "?"
    model = spec.get("model") if isinstance(spec.get("model"), dict) else {}
    return str(task), str(model.get("backbone") or model.get("type") or "?")


def _validated_spec(family: TaskFamily, hparams: dict[str, Any], path: Path) -> BaseModel:
    task, backbone = checkpoint_summary(hparams)
    if task != family.name:
        raise VfmError(
            f"{path} is a checkpoint of the {task!r} task (backbone {backbone}); `vfm {family.name}` needs a "
            f"{family.name} checkpoint"
        )
    try:
        return family.spec_class.model_validate(hparams["spec"])
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise WeightsError(f"{path}: its spec does not validate ({where}: {first['msg']})") from None


def _model_weights(state: dict[str, Any]) -> dict[str, Any]:
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        for prefix in _LEGACY_PREFIXES:
            weights.update({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
    return weights


def _ema_weights(payload: dict[str, Any]) -> dict[str, Any]:
    """The exponential moving average of the trained weights when the run kept one (``train.ema.enabled``): the
    weights validation used, so evaluation, prediction and export use them too."""
    for state in (payload.get("callbacks") or {}).values():
        if isinstance(state, dict) and isinstance(state.get("shadow"), dict) and "decay" in state:
            return {k.removeprefix("model."): v for k, v in state["shadow"].items() if k.startswith("model.")}
    return {}


def _legacy_meta(hparams: dict[str, Any]) -> dict[str, Any]:
    return dict(hparams.get("meta") or {"classes": list(hparams.get("classes", []))})


class ExportedGraphError(VfmError):
    """An exported ``.onnx`` graph where a training checkpoint is needed (:class:`vfmkit.Task` adds which tasks'
    predict accepts one)."""


def load_trained(family: TaskFamily, path: str | Path) -> tuple[TaskDef, Trained]:
    """The task definition and the trained model (eval mode) of a checkpoint file or run folder.

    A backbone the checkpoint left out is rebuilt from its recorded source and must have the recorded weights.

    Raises:
        VfmError: a checkpoint of another task (naming its task and backbone); ExportedGraphError: an ``.onnx`` file;
            WeightsError: unreadable, a spec that does not validate, weights that do not fit, or a changed frozen
            backbone.
    """
    path = find_checkpoint(Path(path))
    if path.suffix == ".onnx":
        raise ExportedGraphError(
            f"{path} is an exported ONNX graph; this needs a training checkpoint (a run folder or a .ckpt file)"
        )
    hparams, state, payload = read_training_checkpoint(path)
    spec = _validated_spec(family, hparams, path)
    taskdef = family.select(spec)
    meta = _legacy_meta(hparams)
    weights = {**_model_weights(state), **_ema_weights(payload)}
    records = records_of(payload)
    primary = taskdef.backbone_path + "."
    legacy_omitted = not records and not any(k.startswith(primary) for k in weights)  # vfmkit 0.1 checkpoints
    model = taskdef.build_model(spec, meta, pretrained=bool(records) or legacy_omitted)
    for record in records:
        check_backbone_weights(model, record, path)
    result = model.load_state_dict(weights, strict=False)
    omitted = tuple(f"{r.model_path}." for r in records) + ((primary,) if legacy_omitted else ())
    missing = [k for k in result.missing_keys if not k.startswith(omitted or ("\0",))]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"{path}: its weights do not fit the {taskdef.name} model of its spec (missing {missing[:5]}; "
            f"unexpected {result.unexpected_keys[:5]})"
        )
    return taskdef, Trained(model.eval(), spec, meta, path)


def copy_trained_weights(model: Any, trained: Trained, source: Path) -> None:
    """``train.init_from``: start from a trained model's weights (same architecture), with a new schedule.

    Raises:
        VfmError: the checkpoint's model does not fit this spec's model (backbone named, first mismatches listed).
    """
    target, weights = model.state_dict(), trained.model.state_dict()
    missing = [k for k in target if k not in weights]
    unexpected = [k for k in weights if k not in target]
    resized = [
        f"{k} {tuple(weights[k].shape)} -> {tuple(v.shape)}"
        for k, v in target.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or resized:
        backbone = trained.spec.model_dump().get("model", {}).get("backbone")
        problems = [
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shapes {resized[:3]}" if resized else "",
        ]
        raise VfmError(
            f"train.init_from {source}: its model (backbone {backbone}) does not fit this spec's model ("
            + "; ".join(p for p in problems if p)
            + ")"
        )
    model.load_state_dict(weights)
