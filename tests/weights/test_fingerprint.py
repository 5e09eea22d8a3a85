"""Weights fingerprints (:func:`vfmkit.weights.fingerprint.weights_fingerprint`): every tensor of a state dict."""

from __future__ import annotations

import hashlib

import torch

from vfmkit.weights.fingerprint import weights_fingerprint


def test_fingerprints_cover_zero_dim_tensors_and_keep_their_old_values() -> None:
    """A trainable timm CNN's BatchNorm ``num_batches_tracked`` (a 0-d int64) made the fingerprint raise; every
    other tensor hashes as before, so fingerprints stored in existing checkpoints still match."""
    norm = torch.nn.BatchNorm2d(3)
    before = weights_fingerprint(norm)
    norm.num_batches_tracked += 1
    assert weights_fingerprint(norm) != before
    linear = torch.nn.Linear(3, 2)
    digest = hashlib.sha256()
    for name, tensor in sorted(linear.state_dict().items()):  # the formula before 0-d tensors were handled
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    assert weights_fingerprint(linear) == digest.hexdigest()
