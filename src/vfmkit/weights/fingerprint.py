"""Fingerprints of model weights: a sha256 that changes whenever any tensor of the state dict changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch


def weights_fingerprint(model: torch.nn.Module, include: Callable[[str], bool] | None = None) -> str:
    """sha256 (hex) over the names, shapes, dtypes and bytes of every tensor of ``model.state_dict()`` (0-d tensors,
    e.g. BatchNorm's ``num_batches_tracked``, included).

    ``include``: only the tensors whose state-dict name it accepts (e.g. a backbone without its adaptor heads).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if include is not None and not include(name):
            continue
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
