"""Where vfmkit keeps its own files, and which output folder the running command writes to.

- :func:`cache_home`: ``$VFMKIT_CACHE`` when set, else ``${XDG_CACHE_HOME:-~/.cache}/vfmkit`` (exported ONNX graphs go
  to its ``onnx/`` folder; the CLI writes the traceback of an unexpected failure there when no run folder exists).
- The current output folder: the engine publishes a run folder once it exists (:func:`publish_output_folder`), so
  the CLI can put ``traceback.txt`` beside the run's other files when a command fails unexpectedly. A failure keeps
  the folder published (that is when it is read); a block that ends normally restores the previous value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "VFMKIT_CACHE"

_output_folder: Path | None = None


def cache_home() -> Path:
    """vfmkit's cache folder (not created here): ``$VFMKIT_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/vfmkit``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "vfmkit"


@contextmanager
def publish_output_folder(folder: str | Path) -> Iterator[Path]:
    """Publish ``folder`` as the current command's output folder while the block runs (see the module docstring)."""
    global _output_folder
    previous, _output_folder = _output_folder, Path(folder)
    yield _output_folder
    _output_folder = previous  # not reached when the block raises: the failed command's folder stays published


def current_output_folder() -> Path | None:
    """The folder published last by a block that has not ended normally (None: none)."""
    return _output_folder


def forget_output_folder() -> None:
    """Clear the published folder (the CLI does this before each command)."""
    global _output_folder
    _output_folder = None
