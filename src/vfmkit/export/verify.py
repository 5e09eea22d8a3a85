"""Numerical parity of an exported ONNX file with the PyTorch module it came from.

:func:`verify_onnx` runs the file with onnxruntime on the CPU and the module in PyTorch (eval and inference mode) on
the same inputs, at two batch sizes so the dynamic batch axis is exercised too, and fails above a tolerance. Feed it
real preprocessed images, not only noise: export parity problems often hide in value ranges noise never reaches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vfmkit.export.onnx import ExportError, _eval_mode
from vfmkit.export.runtime import OnnxModel

logger = logging.getLogger("vfmkit.export")

DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_onnx`.

    Attributes:
        per_output: output name -> max abs difference ONNX vs PyTorch over every batch size run (``inf`` when
            one side has NaN or inf where the other does not).
        max_abs_diff: the largest of ``per_output``.
        batch_sizes: the batch sizes compared, e.g. ``(1, 3)``.
        provider: the onnxruntime execution provider, ``"CPUExecutionProvider"``.
        tolerance: the threshold the differences were checked against.
    """

    per_output: dict[str, float]
    max_abs_diff: float
    batch_sizes: tuple[int, ...]
    provider: str
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (e.g. for ``export/verify.json``)."""
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data

    def __str__(self) -> str:
        diffs = ", ".join(f"{name} {diff:.2e}" for name, diff in self.per_output.items())
        sizes = " and ".join(str(b) for b in self.batch_sizes)
        return (
            f"ONNX ({self.provider}) vs PyTorch, batch sizes {sizes}: max abs diff {self.max_abs_diff:.2e} "
            f"({diffs}; tolerance {self.tolerance:.0e})"
        )


def verify_onnx(
    path: str | Path,
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    tolerance: float = DEFAULT_TOLERANCE,
    relative: bool = False,
) -> VerifyResult:
    """Compare an exported file with ``module`` on ``inputs`` at two batch sizes.

    The batch sizes are 1 (``inputs[:1]``) and the full batch B; a batch of one is also run repeated twice, so the
    dynamic batch axis is always exercised.

    Args:
        path: the ``.onnx`` file written by :func:`vfmkit.export.onnx.export_onnx` from ``module``.
        module: the PyTorch module (run in eval and inference mode on its own device; its flags are restored).
        inputs: one tensor per graph input in graph order, sharing the batch axis; for an image model float32
            (B, 3, H, W) RGB in [0, 1] as produced by :func:`vfmkit.preprocess_images` from real images.
        tolerance: largest accepted max abs difference per output (fp32 default 1e-4).
        relative: scale the tolerance of each output by max(1, its largest |PyTorch value|), for models whose
            outputs reach large magnitudes (e.g. backbone features without a final norm).

    Returns:
        The measured differences (also logged at INFO on ``vfmkit.export``).

    Raises:
        ExportError: a difference above ``tolerance`` (naming the output, the difference and the batch size), a
            shape mismatch, inputs that do not match the graph, or an unloadable file.
    """
    onnx_model = OnnxModel(path)
    if isinstance(inputs, torch.Tensor) or len(inputs) != len(onnx_model.input_names):
        raise ExportError(f"{onnx_model.path.name} takes {len(onnx_model.input_names)} inputs {onnx_model.input_names}")
    per_output = dict.fromkeys(onnx_model.output_names, 0.0)
    worst_batch = dict.fromkeys(onnx_model.output_names, 0)
    limits = dict.fromkeys(onnx_model.output_names, tolerance)
    batches = _batches(inputs)
    for batch in batches:
        reference = torch_outputs(module, batch, len(onnx_model.output_names))
        for name, diff in max_abs_diffs(onnx_model(*batch), reference).items():
            if diff > per_output[name]:
                per_output[name], worst_batch[name] = diff, len(batch[0])
        if relative:
            for name, expected in zip(onnx_model.output_names, reference, strict=True):
                limits[name] = max(limits[name], scaled_tolerance(tolerance, expected))
    result = VerifyResult(
        per_output=per_output,
        max_abs_diff=max(per_output.values()),
        batch_sizes=tuple(len(b[0]) for b in batches),
        provider=onnx_model.provider,
        tolerance=tolerance,
    )
    logger.info("%s", result)
    failed = [
        f"'{n}' differs by {d:.3g} (batch size {worst_batch[n]}{_limit_note(limits[n], tolerance)})"
        for n, d in per_output.items()
        if d > limits[n]
    ]
    if failed:
        scope = "relative " if relative else ""
        raise ExportError(
            f"ONNX outputs of {onnx_model.path.name} differ from PyTorch above the {scope}tolerance {tolerance:g}: "
            + "; ".join(failed)
        )
    return result


def scaled_tolerance(tolerance: float, expected: np.ndarray) -> float:
    """``tolerance`` x max(1, largest finite |value| of ``expected``): an absolute bound relative to the output's
    magnitude."""
    finite = np.abs(expected[np.isfinite(expected)]) if expected.size else np.zeros(0)
    return tolerance * max(1.0, float(finite.max()) if finite.size else 1.0)


def _limit_note(limit: float, tolerance: float) -> str:
    return f", limit {limit:.3g}" if limit != tolerance else ""


def _batches(inputs: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, ...]]:
    """The two batches compared: (inputs[:1], inputs), or (inputs, inputs repeated twice) for a batch of one."""
    sizes = {len(t) for t in inputs}
    if len(sizes) != 1 or 0 in sizes:
        raise ExportError(f"verification inputs must share a non-empty batch axis, got batch sizes {sorted(sizes)}")
    if sizes == {1}:
        return [inputs, tuple(torch.cat([t, t]) for t in inputs)]
    return [tuple(t[:1] for t in inputs), inputs]


def torch_outputs(module: nn.Module, batch: tuple[torch.Tensor, ...], count: int) -> list[np.ndarray]:
    """Eager outputs of ``module`` (eval and inference mode, on its own device) as numpy arrays (floats as float32),
    in graph output order; ``count`` is the number of graph outputs expected."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    with _eval_mode(module), torch.inference_mode():
        outputs = module(*(t.to(device) for t in batch))
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    if len(outputs) != count:
        raise ExportError(f"the module returns {len(outputs)} outputs but the ONNX graph has {count}")
    return [o.detach().float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in outputs]


def max_abs_diffs(actual: dict[str, np.ndarray], expected: list[np.ndarray]) -> dict[str, float]:
    """Output name -> max abs difference of ONNX outputs ``actual`` (graph order) against ``expected`` (same order).

    Raises:
        ExportError: a shape mismatch (naming the output).
    """
    return {
        name: _max_abs_diff(name, value, reference)
        for (name, value), reference in zip(actual.items(), expected, strict=True)
    }


@dataclass(frozen=True)
class CosineStats:
    """Cosine similarity of each row (sample) of one output to a reference: the worst and the mean over the batch."""

    min: float
    mean: float

    def __str__(self) -> str:
        return f"min {self.min:.4f}, mean {self.mean:.4f}"


def cosine_stats(actual: np.ndarray, expected: np.ndarray) -> CosineStats:
    """Per-sample cosine similarity of ``actual`` to ``expected``, both (B, ...) and flattened per sample.

    Rows that are all zero on either side count as cosine 1 when both are zero, else 0; NaN counts as 0.
    """
    if actual.shape != expected.shape or actual.ndim == 0 or len(actual) == 0:
        raise ExportError(
            f"cosine needs two non-empty (B, ...) arrays of one shape, got {actual.shape}, {expected.shape}"
        )
    a = actual.reshape(len(actual), -1).astype(np.float64)
    b = expected.reshape(len(expected), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.abs(a).max(axis=1) == 0) & (np.abs(b).max(axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), both_zero.astype(float))
    cosine = np.nan_to_num(cosine, nan=0.0)
    return CosineStats(min=float(cosine.min()), mean=float(cosine.mean()))


def _max_abs_diff(name: str, actual: np.ndarray, expected: np.ndarray) -> float:
    """Max |actual - expected|; equal values (inf included) and NaN on both sides count as 0, NaN vs number as inf."""
    if actual.shape != expected.shape:
        raise ExportError(f"ONNX output '{name}' has shape {actual.shape}, PyTorch gives {expected.shape}")
    if actual.size == 0:
        return 0.0
    a, b = actual.astype(np.float64), expected.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
    return float(np.nan_to_num(diff, nan=math.inf).max())
