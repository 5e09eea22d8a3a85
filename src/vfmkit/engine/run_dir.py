"""Run folders: ``<results_dir>/<task>/<name>[N]``, never overwritten silently, with the resolved spec and the
environment recorded."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from vfmkit.spec.render import render_resolved
from vfmkit.utils.atomic import atomic_write_text  # also imported from here by the engine modules


def create_run_dir(results_dir: Path, task: str, name: str, exist_ok: bool = False) -> Path:
    """A new folder ``results_dir/task/name``, or ``name2``, ``name3``, ... when taken (unless ``exist_ok``)."""
    parent = Path(results_dir) / task
    parent.mkdir(parents=True, exist_ok=True)
    candidate, index = parent / name, 1
    while not exist_ok:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            index += 1
            candidate = parent / f"{name}{index}"
    candidate.mkdir(exist_ok=True)
    return candidate


def spec_hash(spec: BaseModel) -> str:
    """sha256 of the resolved spec (YAML), the fingerprint recorded in the model card."""
    return hashlib.sha256(render_resolved(spec).encode()).hexdigest()


def write_resolved_spec(run_dir: Path, spec: BaseModel) -> Path:
    path = run_dir / "spec.resolved.yaml"
    atomic_write_text(path, render_resolved(spec))
    return path


def _git_sha(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(seed: int | None = None) -> dict[str, Any]:
    """Versions, git SHAs, hardware and the command line of this process."""
    import lightning
    import numpy
    import timm
    import torch
    import torchvision

    import vfmkit

    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "cwd": os.getcwd(),
        "seed": seed,
        "versions": {
            "python": platform.python_version(),
            "vfmkit": vfmkit.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "timm": timm.__version__,
            "lightning": lightning.__version__,
            "numpy": numpy.__version__,
        },
        "git": {"vfmkit": _git_sha(Path(vfmkit.__file__).parent), "cwd": _git_sha(Path.cwd())},
        "hardware": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda_devices": cuda,
        },
    }


def write_environment(run_dir: Path, seed: int | None = None) -> Path:
    path = run_dir / "env.json"
    atomic_write_text(path, json.dumps(environment(seed), indent=2))
    return path
