"""Safe checkpoint reading: safetensors, or ``torch.load(weights_only=True)`` with only ``argparse.Namespace``
allowed beyond tensors and containers. Nothing in a checkpoint is ever executed."""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from vfmkit.errors import WeightsError

SAFE_GLOBALS = [argparse.Namespace]


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file on the CPU.

    Raises:
        WeightsError: missing or unreadable file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None


def load_pickle_checkpoint(path: str | Path) -> Any:
    """A torch pickle checkpoint loaded with ``weights_only=True`` (argparse.Namespace allowed).

    Raises:
        WeightsError: missing file, a corrupt archive, or a pickle that needs any other class or function (the
            message names it; vfmkit never falls back to an unsafe load).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise WeightsError(f"{path}: not a readable torch checkpoint (corrupt or not a pickle)") from None
        raise WeightsError(
            f"{path}: refused to load: the pickle needs {found.group(1)}, and vfmkit only loads tensors, containers "
            "and argparse.Namespace (weights_only=True). Convert it to safetensors on a trusted machine."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable torch checkpoint ({str(err).splitlines()[0][:300]})") from None
