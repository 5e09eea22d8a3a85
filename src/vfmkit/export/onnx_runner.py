"""Run a backbone through its cached ONNX export with onnxruntime, behind the backbone's own call surface.

:class:`OnnxBackboneRunner` is called like the backbone (float32 (B, 3, H, W) RGB in [0, 1] -> :class:`BackboneOutput`)
and exposes its ``preprocessing``, so feature extraction code takes either. Per input size it

1. takes the graph from :class:`vfmkit.export.cache.OnnxCache` (exporting it, and quantizing it with ``int8``, on a
   miss: once per weights, resolution, opset and precision);
2. loads it with onnxruntime (a file onnxruntime cannot load is deleted and rebuilt once);
3. checks the first batch against PyTorch eager fp32 on the same images and reports it: fp32: the max abs
   difference (refused above 1e-4 x max(1, largest |value|)); int8: the min / mean cosine of the summary to fp32,
   refused when the mean is below ``min_cosine``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vfmkit.errors import VfmError
from vfmkit.export.backbone import BackboneGraph, export_backbone, to_backbone_output
from vfmkit.export.cache import ExportKey, OnnxCache
from vfmkit.export.onnx import DEFAULT_OPSET, ExportError
from vfmkit.export.quantize import quantize_int8
from vfmkit.export.runtime import OnnxModel
from vfmkit.export.verify import DEFAULT_TOLERANCE, cosine_stats, max_abs_diffs, scaled_tolerance, torch_outputs
from vfmkit.models.backbones.base import Backbone, BackboneOutput, Preprocessing
from vfmkit.weights.fingerprint import weights_fingerprint

DEFAULT_MIN_COSINE = 0.995
Report = Callable[[str], None]


def print_to_stderr(message: str) -> None:
    """The default report: one line on stderr (stdout stays for results)."""
    print(message, file=sys.stderr)


class BackboneDelegate:
    """Base of the runners: the wrapped backbone's ``preprocessing`` and ``adaptor_names``."""

    backbone: Backbone

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    @property
    def adaptor_names(self) -> tuple[str, ...]:
        return tuple(self.backbone.adaptor_names)


class OnnxBackboneRunner(BackboneDelegate):
    """A backbone run with onnxruntime on the CPU from its cached export.

    Args:
        backbone: the PyTorch backbone (kept for the export, the fingerprint and the first-batch check).
        model_id: id recorded in the graph and the cache file name.
        int8: run the dynamically quantized graph.
        min_cosine: int8 only: refuse output whose mean summary cosine to fp32 on the first batch is below this.
        cache: the graph cache (default: the user cache folder, see :mod:`vfmkit.export.cache`).
        opset: ONNX operator set.
        threads: onnxruntime intra-op threads; None: torch's thread count (``torch.get_num_threads()``). Idle
            threads do not spin-wait, so decoding processes beside them keep their share of the cores.
        report: where the one-line reports go (default stderr).
    """

    def __init__(
        self,
        backbone: Backbone,
        model_id: str,
        int8: bool = False,
        min_cosine: float = DEFAULT_MIN_COSINE,
        cache: OnnxCache | None = None,
        opset: int = DEFAULT_OPSET,
        threads: int | None = None,
        report: Report = print_to_stderr,
    ) -> None:
        if not 0.0 < min_cosine <= 1.0:
            raise VfmError(f"--min-cosine must be in (0, 1], got {min_cosine}")
        self.backbone, self.model_id, self.int8, self.min_cosine = backbone.eval(), model_id, int8, min_cosine
        self.cache = cache or OnnxCache()
        self.opset, self.report = opset, report
        self.threads = threads or torch.get_num_threads()
        self._fingerprint: str | None = None
        self._models: dict[tuple[int, int], OnnxModel] = {}

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp32"

    @property
    def cache_tag(self) -> str:
        """Identifies this runtime's numerics in feature caches: ``onnxruntime-fp32-opset17`` / ``...-int8-...``."""
        return f"onnxruntime-{self.precision}-opset{self.opset}"

    def __call__(self, images: torch.Tensor) -> BackboneOutput:
        """images float32 (B, 3, H, W) RGB in [0, 1] -> the backbone's outputs as float32 CPU tensors."""
        self.backbone.check_input(images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        model = self._models.get(size)
        if model is None:
            model, outputs = self._first_batch(size, images)
            self._models[size] = model
        else:
            outputs = model(images)
        return to_backbone_output(outputs, size, self.backbone.patch_size)

    def graph_path(self, size: tuple[int, int]) -> Path:
        """The cached graph for input size (H, W), exported (and quantized) first when missing."""
        key = self._key(size)
        cached = self.cache.lookup(key) if self.int8 else None
        if cached is not None:
            return cached
        with torch.inference_mode(False):
            fp32, built = self.cache.get_or_build(key.fp32(), lambda out: self._export(out, size))
            if built:
                self.report(f"exported {self.model_id} at {size[0]}x{size[1]} to ONNX once (cached: {fp32})")
            if not self.int8:
                return fp32
            path = self.cache.store(key, lambda out: quantize_int8(fp32, out))
            self.report(f"quantized the graph to int8 once (cached: {path})")
            return path

    def _key(self, size: tuple[int, int]) -> ExportKey:
        return ExportKey(self.model_id, self.fingerprint, size, self.opset, self.int8, self.adaptor_names)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.backbone)
        return self._fingerprint

    def _export(self, out: Path, size: tuple[int, int]) -> None:
        export_backbone(
            self.backbone,
            out,
            size,
            model_id=self.model_id,
            dynamic_resolution=False,
            opset=self.opset,
            fingerprint=self.fingerprint,
        )

    def _load(self, size: tuple[int, int]) -> OnnxModel:
        """Load the cached graph; one that onnxruntime refuses is discarded and rebuilt once."""
        path = self.graph_path(size)
        try:
            return OnnxModel(path, threads=self.threads, spin=False)
        except ExportError as exc:
            self.report(f"cached ONNX graph {path} does not load ({exc}); rebuilding it")
            key = self._key(size)
            self.cache.discard(key)
            if self.int8:
                self.cache.discard(key.fp32())
            return OnnxModel(self.graph_path(size), threads=self.threads, spin=False)

    def _first_batch(self, size: tuple[int, int], images: torch.Tensor) -> tuple[OnnxModel, dict[str, np.ndarray]]:
        """Load the graph for ``size``, run the batch, check it against PyTorch fp32 and report."""
        model = self._load(size)
        outputs = model(images)
        graph = BackboneGraph(self.backbone)
        expected = torch_outputs(graph, (images,), len(graph.output_names))
        count = f"{len(images)} image{'s' if len(images) != 1 else ''}"
        if self.int8:
            self._check_int8(outputs, expected, count)
        else:
            self._check_fp32(outputs, expected, count)
        return model, outputs

    def _check_fp32(self, outputs: dict[str, np.ndarray], expected: list[np.ndarray], count: str) -> None:
        diffs = max_abs_diffs(outputs, expected)
        worst = max(diffs, key=diffs.get)
        self.report(
            f"onnxruntime fp32 ({self.threads} threads): max abs diff to PyTorch on the first batch ({count}): "
            f"{diffs[worst]:.2e} ({worst})"
        )
        for (name, diff), reference in zip(diffs.items(), expected, strict=True):
            limit = scaled_tolerance(DEFAULT_TOLERANCE, reference)
            if diff > limit:
                raise ExportError(
                    f"onnxruntime output '{name}' of {self.model_id} differs from PyTorch by {diff:.3g} (limit "
                    f"{limit:.3g}) on the first batch; use --runtime torch and report this model"
                )

    def _check_int8(self, outputs: dict[str, np.ndarray], expected: list[np.ndarray], count: str) -> None:
        summary = cosine_stats(outputs["summary"], expected[0])
        features = cosine_stats(outputs["features"], expected[1])
        self.report(
            f"onnxruntime int8 ({self.threads} threads): cosine to PyTorch fp32 on the first batch ({count}): "
            f"summary {summary}; features mean {features.mean:.4f}"
        )
        if summary.mean < self.min_cosine:
            raise VfmError(
                f"int8 output of {self.model_id} refused: mean summary cosine to fp32 is {summary.mean:.4f} on the "
                f"first batch ({count}), below --min-cosine {self.min_cosine}; drop --int8, or lower --min-cosine"
            )
