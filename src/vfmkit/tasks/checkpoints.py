"""Reading task checkpoints (written by ``vfm <task> train``) safely and loading their weights into a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vfmkit.errors import WeightsError
from vfmkit.weights.safe_load import load_pickle_checkpoint


def read_task_checkpoint(path: Path, task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hyper-parameters (``spec``, ``classes``, ...) and the state dict of a training checkpoint.

    Raises:
        WeightsError: unreadable, unsafe, or not a checkpoint of ``task``.
    """
    payload = load_pickle_checkpoint(path)
    hparams = payload.get("hyper_parameters", {}) if isinstance(payload, dict) else {}
    if "spec" not in hparams or "classes" not in hparams or "state_dict" not in payload:
        raise WeightsError(f"{path}: not a vfm {task} checkpoint (no spec/classes in hyper_parameters)")
    return hparams, payload["state_dict"]


def load_task_weights(model: nn.Module, state: dict, prefix: str, path: Path, frozen_prefix: str | None) -> None:
    """Load the ``prefix``-ed entries of ``state`` into ``model``; keys under ``frozen_prefix`` may be absent
    (frozen pretrained weights are not stored in checkpoints).

    Raises:
        WeightsError: missing or unexpected keys.
    """
    weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not (frozen_prefix and k.startswith(frozen_prefix))]
    if missing or result.unexpected_keys:
        unexpected = result.unexpected_keys[:5]
        raise WeightsError(f"{path}: weights do not fit the model (missing {missing[:5]}; unexpected {unexpected})")
