"""Where a run's weights come from: checked by the weights rule before anything is read, recorded once built.

:func:`check_weights` decides the source of every backbone a task's spec loads (:meth:`TaskDef.weight_requests`)
by :func:`vfmkit.weights.rule.decide_source`, so a contradiction (a checkpoint file with ``pretrained: false`` ...)
fails in a second, naming both keys, before the data preflight and before any run folder exists.
:func:`record_built_weights` fingerprints each backbone as built, before training, and :func:`write_weights_json`
keeps the facts in ``<run>/weights.json``, which the model card lists.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel
from torch import nn

from vfmkit.engine.frozen import submodule
from vfmkit.engine.taskdef import TaskDef
from vfmkit.utils.atomic import atomic_write_text
from vfmkit.weights.record import WeightsRecord, record_weights, records_as_json, records_from_json
from vfmkit.weights.rule import WeightsDecision, decide_source

WEIGHTS_FILE = "weights.json"
"""The run folder's record of every backbone's weights (see :func:`vfmkit.weights.record.records_as_json`)."""


def check_weights(taskdef: TaskDef, spec: BaseModel) -> list[WeightsDecision]:
    """The weights source of every backbone the spec loads, decided before anything is loaded.

    Raises:
        ConfigurationError: a request that contradicts itself (naming both spec keys);
        ModelNotFoundError: an unknown backbone name or a missing checkpoint file (naming the key).
    """
    return [decide_source(request) for request in taskdef.weight_requests(spec)]


def record_built_weights(decisions: list[WeightsDecision], model: nn.Module) -> list[WeightsRecord]:
    """One record per decision, fingerprinting the backbone at its request's ``module_path`` in ``model`` (call it
    before any training step changes the weights)."""
    return [
        record_weights(decision, submodule(model, decision.request.module_path))
        for decision in decisions
        if decision.request.module_path
    ]


def write_weights_json(run_dir: Path, records: list[WeightsRecord], init_from: Path | None) -> Path:
    """Write ``<run_dir>/weights.json`` atomically."""
    path = Path(run_dir) / WEIGHTS_FILE
    atomic_write_text(path, json.dumps(records_as_json(records, init_from), indent=2) + "\n")
    return path


def read_weights_json(run_dir: Path) -> tuple[list[WeightsRecord], str | None] | None:
    """The records and ``init_from`` of ``<run_dir>/weights.json``; None when the run has none (a run started by
    an older vfmkit) or it does not read."""
    path = Path(run_dir) / WEIGHTS_FILE
    try:
        return records_from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
