"""Resolving ``train.resume`` (exact continuation) and ``train.init_from`` (new schedule from trained weights),
and finding checkpoints given a run folder or a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from vfmkit.errors import VfmError

_IGNORED_FOR_RESUME = {("train", "resume"), ("name",), ("exist_ok",), ("results_dir",)}


def find_checkpoint(path: Path, prefer: str = "best") -> Path:
    """A checkpoint file from a run folder (``checkpoints/<prefer>.ckpt``, else the other one) or a file path.

    Raises:
        VfmError: nothing usable at ``path``.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        order = ["best", "last"] if prefer == "best" else ["last", "best"]
        for name in order:
            candidate = path / "checkpoints" / f"{name}.ckpt"
            if candidate.is_file():
                return candidate
        raise VfmError(f"{path}: no checkpoints/best.ckpt or checkpoints/last.ckpt in this run folder")
    raise VfmError(f"checkpoint not found: {path} (expected a run folder or a .ckpt file)")


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` -> ``<run>``)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _differences(old: Any, new: Any, prefix: tuple = ()) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if prefix + (key,) not in _IGNORED_FOR_RESUME:
                out += _differences(old.get(key), new.get(key), prefix + (key,))
        return out
    return [] if old == new else [f"{'.'.join(prefix)}: {old!r} -> {new!r}"]


def check_resume(spec: BaseModel) -> tuple[Path, Path]:
    """The run folder and last checkpoint to continue, after checking the spec is the run's spec.

    Raises:
        VfmError: not a run folder or a checkpoint inside one (nothing is written anywhere else), no last checkpoint,
            another task or backbone (said first), or a spec that differs from the run's (resume continues exactly;
            a new schedule from trained weights is ``train.init_from``).
    """
    checkpoint = find_checkpoint(spec.train.resume, prefer="last")
    run_dir = run_dir_of(checkpoint)
    saved = run_dir / "spec.resolved.yaml"
    if checkpoint.parent.name != "checkpoints" or not saved.is_file():
        raise VfmError(
            f"train.resume {spec.train.resume}: not a run folder or a checkpoint inside one (<run>/checkpoints/*.ckpt "
            "next to <run>/spec.resolved.yaml); to start a new run from these weights use train.init_from"
        )
    old = yaml.safe_load(saved.read_text())
    new = spec.model_dump(mode="json")
    old_what, new_what = _task_and_backbone(old), _task_and_backbone(new)
    if old_what != new_what:
        raise VfmError(
            f"train.resume {run_dir} is a {old_what[0]} run with backbone {old_what[1]}, but this spec is for "
            f"{new_what[0]} with backbone {new_what[1]}; resume with the run's own spec (its spec.resolved.yaml)"
        )
    changed = _differences(old, new)
    if changed:
        raise VfmError(
            f"train.resume continues {run_dir} exactly, but the spec differs ({'; '.join(changed[:4])}). "
            f"To start a new schedule from its weights use train.init_from={checkpoint} instead."
        )
    return run_dir, checkpoint


def _task_and_backbone(spec: dict) -> tuple[str, str]:
    model = spec.get("model") if isinstance(spec.get("model"), dict) else {}
    return str(spec.get("task", "?")), str(model.get("backbone") or model.get("type") or "?")
