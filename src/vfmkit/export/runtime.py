"""Running exported ONNX files with onnxruntime (CPU) and reading their metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfmkit.export.onnx import ExportError


class OnnxModel:
    """An exported ONNX file run with onnxruntime on the CPU.

    Attributes:
        path: the ``.onnx`` file.
        metadata: ``metadata_props`` as a dict; values that are valid JSON are decoded (lists, numbers, dicts),
            the others stay strings.
        input_names / output_names: graph input and output names, in order.
        input_shapes: name -> shape, each axis an int or a symbolic name such as ``"batch"``.
        input_size: (H, W) of the first input when it is a static 4-D NCHW image input, else None.
        provider: the onnxruntime execution provider in use (``"CPUExecutionProvider"``).
    """

    def __init__(self, path: str | Path, threads: int | None = None, spin: bool = True) -> None:
        """Load ``path``.

        Args:
            path: the ``.onnx`` file.
            threads: onnxruntime intra-op threads; None: onnxruntime's default (one per physical core).
            spin: let idle worker threads spin-wait for work (onnxruntime's default); False yields the cores
                between operators, better when other processes (e.g. image decoders) share them.

        Raises:
            ExportError: the file is missing or is not a loadable ONNX model (the message names it).
        """
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"ONNX model not found: {self.path}")
        self.session = _open_session(self.path, threads, spin)
        self.provider = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}
        self._input_types = {i.name: i.type for i in self.session.get_inputs()}
        raw = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {key: _json_or_text(value) for key, value in raw.items()}

    @property
    def input_size(self) -> tuple[int, int] | None:
        shape = self.input_shapes[self.input_names[0]]
        if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
            return shape[2], shape[3]
        return None

    def __call__(self, *arrays: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Run the graph.

        Args:
            arrays: one array per graph input, in ``input_names`` order (for an image model: float32 (B, 3, H, W)
                RGB in [0, 1]); torch tensors and float64 arrays are converted.

        Returns:
            Output name -> array, e.g. ``{"logits": (B, C) float32, "probs": (B, C) float32}``.

        Raises:
            ExportError: a wrong number of arrays, or an array whose rank or fixed axes do not match the graph.
        """
        if len(arrays) != len(self.input_names):
            raise ExportError(
                f"{self.path.name} takes {len(self.input_names)} inputs {self.input_names}, got {len(arrays)}"
            )
        feeds = {name: self._feed(name, array) for name, array in zip(self.input_names, arrays, strict=True)}
        results = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, results, strict=True))

    def _feed(self, name: str, array: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        array = np.asarray(array)
        if self._input_types[name] == "tensor(float)" and array.dtype != np.float32:
            array = array.astype(np.float32)
        expected = self.input_shapes[name]
        fixed_ok = all(not isinstance(e, int) or e == a for e, a in zip(expected, array.shape, strict=False))
        if array.ndim != len(expected) or not fixed_ok:
            wanted = " x ".join(str(e) for e in expected)
            raise ExportError(f"input '{name}' of {self.path.name} must be {wanted}, got {tuple(array.shape)}")
        return np.ascontiguousarray(array)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, inputs={self.input_shapes}, outputs={self.output_names})"


def _open_session(path: Path, threads: int | None = None, spin: bool = True) -> Any:
    """An onnxruntime CPU session for ``path`` (``threads`` intra-op threads when given, spin-waiting or not), quiet
    about benign graph warnings."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError("running ONNX models needs the onnxruntime package: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"cannot load ONNX model {path}: {reason}") from exc


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value
