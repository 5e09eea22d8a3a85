"""ONNX export of an eval-mode module, and a small onnxruntime wrapper to run the exported file.

:func:`export_onnx` turns a module whose ``forward`` takes one or more tensors and returns a tensor or a tuple of
tensors into a single ``.onnx`` file:

- operator set >= 17, standard ONNX operators only (no custom domains), so onnxruntime and TensorRT read it;
- a dynamic batch axis (named ``batch``) on every input and output unless ``dynamic_batch=False``; other input axes
  are fixed to the example input's size (export one file per resolution) unless named in ``dynamic_input_axes``
  (e.g. ``{"image": {2: "height", 3: "width"}}`` for a model whose graph holds for any image size);
- the caller's ``metadata`` (labels, mean/std, resolution, task...) stored as ONNX ``metadata_props``, plus
  ``vfmkit_version`` and ``vfmkit_exporter``;
- written atomically: the exporter works in a temporary folder beside the target and the result is moved into place
  with ``os.replace`` only after ``onnx.checker`` accepted it, so a failure never leaves a partial file behind and
  never clobbers an existing one. Models above ~1.8 GB keep their weights in ``<name>.onnx.data`` beside the file.

Exporters (``exporter="auto"``): the one that writes the requested operator set natively goes first, the other is
the fallback when it raises. At opset 17 that is the TorchScript tracer (``dynamo=False``); the torch.export-based
exporter ("dynamo") translates at opset 18 and reaching 17 needs onnx's C version converter, which breaks some graphs
(antialiased Resize, ReduceL2), so it is the fallback there (converted after its graph optimiser, then re-checked).
From opset 18 the torch.export-based exporter goes first. The TorchScript path runs with the
``nn.MultiheadAttention`` fast path off (its fused op has no ONNX symbolic: open_clip towers would fail). The
exporters' console noise (deprecation and tracer warnings, progress lines, graphs printed from C++ on failure) is
captured and sent to the ``vfmkit.export`` logger at DEBUG level; failures surface as :class:`ExportError` with the
root cause of each exporter tried. The exporter used is stored in the file as ``vfmkit_exporter``.

:class:`OnnxModel` loads an exported file with onnxruntime on the CPU and exposes its names, metadata and a call that
returns ``{output name: array}``. Numerical parity with PyTorch is checked by :func:`vfmkit.export.verify.verify_onnx`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vfmkit._version import __version__
from vfmkit.errors import VfmError
from vfmkit.utils.atomic import DISK_ERRNOS, atomic_write_bytes, naming_the_target

logger = logging.getLogger("vfmkit.export")

MIN_OPSET = 17
DEFAULT_OPSET = 17
BATCH_AXIS_NAME = "batch"
EXPORTERS = ("dynamo", "torchscript")
Exporter = Literal["auto", "dynamo", "torchscript"]
EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # bytes of weights above which they go to <name>.onnx.data (protobuf: 2 GB)
STANDARD_DOMAINS = ("", "ai.onnx")
RESERVED_METADATA = ("vfmkit_version", "vfmkit_exporter")


class ExportError(VfmError):
    """An export that failed, a file that is not a usable ONNX model, or ONNX outputs that differ from PyTorch."""


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    metadata: Mapping[str, str],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    exporter: Exporter = "auto",
    dynamic_input_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> Path:
    """Export ``module`` to an ONNX file, check it, and embed ``metadata``.

    Args:
        module: the model; exported in eval mode (its train/eval flags are restored afterwards). ``forward`` takes
            the ``example_inputs`` positionally and returns a tensor or a tuple of tensors.
        example_inputs: one tensor per graph input, e.g. ``(images,)`` with images float32 (B, 3, H, W) in [0, 1].
            Only their shapes and dtypes matter; every axis but the batch axis is fixed to these sizes.
        path: the ``.onnx`` file to write (parent folders are created; an existing file is replaced only on success).
        input_names: one graph input name per example input, e.g. ``("input",)``.
        output_names: one graph output name per returned tensor, e.g. ``("logits", "probs")``.
        metadata: strings stored as ONNX ``metadata_props`` (JSON-encode lists and dicts first). ``vfmkit_version``
            and ``vfmkit_exporter`` are added and may not be given.
        opset: ONNX operator set, at least 17.
        dynamic_batch: make axis 0 of every input and output a symbolic ``batch`` dimension.
        exporter: ``"auto"`` (the exporter native at ``opset`` first, the other if it raises: see the module
            docstring), ``"dynamo"`` (torch.export-based) or ``"torchscript"``.
        dynamic_input_axes: input name -> {axis (>= 1): symbolic name} of further axes to keep symbolic, e.g.
            ``{"image": {2: "height", 3: "width"}}``. The module's forward must hold for any size of those axes
            (the tracer records one path through Python control flow): verify at a second size.

    Returns:
        The path written.

    Raises:
        ExportError: a bad argument, a forward that raises or returns something else than tensors, both exporters
            failing, or an exported graph that fails ``onnx.checker``, uses custom operators or lost its dynamic batch.
    """
    path = Path(path)
    inputs = _check_export_args(example_inputs, input_names, output_names, metadata, opset, exporter)
    axes = _check_dynamic_axes(dynamic_input_axes or {}, input_names, inputs)
    _require_onnx()
    with _eval_mode(module):
        _preflight(module, inputs, output_names)
        path.parent.mkdir(parents=True, exist_ok=True)
        # a disk error anywhere in the staging folder (.<name>.*/) names `path`
        with naming_the_target(path), tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
            raw = Path(tmp) / "raw.onnx"
            order = _exporter_order(exporter, opset)
            graph = _GraphSpec(input_names, output_names, opset, dynamic_batch, axes)
            used = _run_exporters(order, module, inputs, raw, graph)
            staged = Path(tmp) / path.name
            meta = {**metadata, "vfmkit_version": __version__, "vfmkit_exporter": used}
            _finalize(raw, staged, meta, graph)
            _move_into_place(staged, path)
    logger.info("exported %s (opset %d, %s exporter)", path, opset, used)
    return path


def _check_export_args(
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    metadata: Mapping[str, str],
    opset: int,
    exporter: str,
) -> tuple[torch.Tensor, ...]:
    """Validate the arguments of :func:`export_onnx`; return the inputs detached, cloned, outside inference mode."""
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportError(f"ONNX opset must be >= {MIN_OPSET}, got {opset!r}")
    if exporter not in ("auto", *EXPORTERS):
        raise ExportError(f"exporter must be one of auto, {', '.join(EXPORTERS)}; got {exporter!r}")
    if isinstance(example_inputs, torch.Tensor) or not all(isinstance(t, torch.Tensor) for t in example_inputs):
        raise ExportError("example_inputs must be a tuple of tensors, e.g. (images,)")
    if len(input_names) != len(example_inputs):
        raise ExportError(
            f"{len(example_inputs)} example inputs but {len(input_names)} input names {list(input_names)}"
        )
    names = [*input_names, *output_names]
    if not output_names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ExportError(f"input and output names must be distinct non-empty strings, got {names}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ExportError(
                f"metadata {key!r} is a {type(value).__name__}: ONNX metadata values are strings, "
                "JSON-encode lists, numbers and dicts first (json.dumps)"
            )
        if key in RESERVED_METADATA:
            raise ExportError(f"metadata key {key!r} is set by vfmkit; remove it from the metadata")
    with torch.inference_mode(False):
        return tuple(t.detach().clone() for t in example_inputs)


def _check_dynamic_axes(
    axes: Mapping[str, Mapping[int, str]], input_names: Sequence[str], inputs: tuple[torch.Tensor, ...]
) -> dict[str, dict[int, str]]:
    """Validate ``dynamic_input_axes``: known inputs, axes >= 1 within the rank, non-empty distinct names."""
    ranks = {name: tensor.ndim for name, tensor in zip(input_names, inputs, strict=True)}
    checked: dict[str, dict[int, str]] = {}
    for name, named in axes.items():
        if name not in ranks:
            raise ExportError(f"dynamic_input_axes names {name!r}, which is not an input ({list(input_names)})")
        for axis, label in named.items():
            if not isinstance(axis, int) or not 1 <= axis < ranks[name] or not isinstance(label, str) or not label:
                raise ExportError(
                    f"dynamic_input_axes[{name!r}] must map axes 1..{ranks[name] - 1} to names, got {dict(named)}"
                )
        checked[name] = dict(named)
    labels = [label for named in checked.values() for label in named.values()]
    if BATCH_AXIS_NAME in labels:
        raise ExportError(f"the axis name {BATCH_AXIS_NAME!r} is reserved for the batch axis")
    return checked


@dataclasses.dataclass(frozen=True)
class _GraphSpec:
    """Names and symbolic axes the exported graph must have."""

    input_names: Sequence[str]
    output_names: Sequence[str]
    opset: int
    dynamic_batch: bool
    input_axes: Mapping[str, Mapping[int, str]]

    def symbolic_input_axes(self, name: str) -> dict[int, str]:
        """Axis -> symbolic name of one input, the batch axis included when dynamic."""
        batch = {0: BATCH_AXIS_NAME} if self.dynamic_batch else {}
        return {**batch, **self.input_axes.get(name, {})}


def _require_onnx() -> None:
    """Fail early, with the install command, when the ONNX packages are missing."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(package)
        except ImportError as exc:
            raise ExportError(
                f"ONNX export needs the {package} package: pip install onnx onnxscript onnxruntime"
            ) from exc


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode and restore every submodule's own train/eval flag afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def _preflight(module: nn.Module, inputs: tuple[torch.Tensor, ...], output_names: Sequence[str]) -> None:
    """Run the module once in eager mode so a broken forward or a wrong output count gets a direct message."""
    try:
        with torch.no_grad():
            outputs = module(*inputs)
    except Exception as exc:
        raise ExportError(f"the module's forward failed on the example inputs: {type(exc).__name__}: {exc}") from exc
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    if not all(isinstance(o, torch.Tensor) for o in outputs):
        kinds = ", ".join(type(o).__name__ for o in outputs)
        raise ExportError(f"the module must return a tensor or a tuple of tensors, got ({kinds})")
    if len(outputs) != len(output_names):
        raise ExportError(f"the module returns {len(outputs)} tensors but {len(output_names)} output names were given")


def _exporter_order(exporter: str, opset: int) -> tuple[str, ...]:
    """Exporters to try: the one that writes ``opset`` natively first (TorchScript below 18, else torch.export)."""
    if exporter != "auto":
        return (exporter,)
    return ("torchscript", "dynamo") if opset < _dynamo_native_opset() else ("dynamo", "torchscript")


def _run_exporters(
    order: Sequence[str], module: nn.Module, inputs: tuple[torch.Tensor, ...], file: Path, graph: _GraphSpec
) -> str:
    """Try the exporters in ``order``; return the name of the first that wrote ``file``."""
    failures = []
    for name in order:
        export = _export_dynamo if name == "dynamo" else _export_torchscript
        captured = io.StringIO()
        try:
            with _quiet(captured), torch.no_grad():
                export(module, inputs, file, graph)
            return name
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
                raise  # the disk, not the exporter: the next exporter would fail the same way
            logger.debug("%s exporter failed; its output:\n%s", name, captured.getvalue(), exc_info=True)
            failures.append(f"{name} exporter: {_short_reason(exc)}")
            _empty_folder(file.parent)
            if len(order) > 1 and name != order[-1]:
                logger.info("%s ONNX exporter failed (%s); trying the next one", name, _short_reason(exc))
    raise ExportError("ONNX export failed: " + "; ".join(failures))


def _empty_folder(folder: Path) -> None:
    """Remove what a failed exporter left in the staging folder."""
    for leftover in folder.iterdir():
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()


def _export_dynamo(module, inputs, file, graph: _GraphSpec) -> None:
    """torch.export-based exporter.

    It translates at its own operator set (18 in torch 2.5-2.15); a lower ``opset`` is reached by converting the
    optimised graph here, where constant subgraphs (e.g. an antialiased position-embedding resize) are already folded
    away, rather than inside torch, which converts before optimising and silently keeps opset 18 when that fails.
    """
    batch = torch.export.Dim(BATCH_AXIS_NAME)
    shapes = None
    if graph.dynamic_batch or graph.input_axes:
        shapes = tuple(
            {axis: batch if axis == 0 else torch.export.Dim.DYNAMIC for axis in graph.symbolic_input_axes(name)}
            for name in graph.input_names
        )
    torch.onnx.export(
        module,
        inputs,
        str(file),
        input_names=list(graph.input_names),
        output_names=list(graph.output_names),
        opset_version=max(graph.opset, _dynamo_native_opset()),
        dynamo=True,
        dynamic_shapes=shapes,
        external_data=True,
        verbose=False,
        report=False,
    )
    if graph.opset < _dynamo_native_opset():
        _convert_opset(file, graph.opset)


def _dynamo_native_opset() -> int:
    """The lowest operator set the torch.export-based exporter translates to without converting."""
    try:
        from torch.onnx._internal.exporter import _constants

        return int(_constants.TORCHLIB_OPSET)
    except (ImportError, AttributeError):
        return 18


def _convert_opset(file: Path, opset: int) -> None:
    """Convert the graph in ``file`` to ``opset`` in place; its weights (external data beside it) are untouched."""
    import onnx
    import onnx.version_converter

    model = onnx.load(str(file), load_external_data=False)
    converted = onnx.version_converter.convert_version(model, opset)
    onnx.save_model(converted, str(file))
    onnx.checker.check_model(str(file))  # the converter can leave invalid attributes (e.g. ReduceL2 18 -> 17)


def _export_torchscript(module, inputs, file, graph: _GraphSpec) -> None:
    """Legacy tracing exporter (deprecated in PyTorch, kept as the fallback)."""
    axes = {name: graph.symbolic_input_axes(name) for name in graph.input_names}
    if graph.dynamic_batch:
        axes.update({name: {0: BATCH_AXIS_NAME} for name in graph.output_names})
    with _mha_fastpath_disabled():
        torch.onnx.export(
            module,
            inputs,
            str(file),
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            opset_version=graph.opset,
            dynamo=False,
            dynamic_axes={name: named for name, named in axes.items() if named} or None,
            do_constant_folding=True,
        )


@contextlib.contextmanager
def _quiet(sink: io.StringIO) -> Iterator[None]:
    """Capture the exporters' warnings, log records below CRITICAL and prints (Python and C++) into ``sink``."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            _capture_fds(sink),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("always")
            try:
                yield
            finally:
                sink.writelines(f"{w.category.__name__}: {w.message}\n" for w in caught)
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _capture_fds(sink: io.StringIO) -> Iterator[None]:
    """Send file descriptors 1 and 2 to a temporary file (the TorchScript exporter prints graphs from C++)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            capture.seek(0)
            sink.write(capture.read().decode(errors="replace"))


@contextlib.contextmanager
def _mha_fastpath_disabled() -> Iterator[None]:
    """nn.MultiheadAttention's fused fast path (eval + no grad) has no TorchScript-ONNX symbolic: use the math path."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def _short_reason(exc: BaseException) -> str:
    """The root cause of an exporter error on one line (the exporters wrap it in long, multi-line messages)."""
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(cause).__name__}: {line[:300]}"


def _finalize(raw: Path, staged: Path, metadata: Mapping[str, str], graph: _GraphSpec) -> None:
    """Add metadata to the exported graph, save it as ``staged`` (one file, or + ``.data`` when large), check it."""
    import onnx

    model = onnx.load(str(raw))
    _check_graph(model, graph)
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=value)
    large = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_THRESHOLD
    onnx.save_model(
        model,
        str(staged),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=f"{staged.name}.data",
    )
    try:
        onnx.checker.check_model(str(staged))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {str(exc).strip().splitlines()[0]}") from exc


def _check_graph(model: Any, graph: _GraphSpec) -> None:
    """Names, standard-only operators, opset and symbolic axes of the exported graph (symbolic axes get their names)."""
    input_names, output_names, opset = graph.input_names, graph.output_names, graph.opset
    inputs = {v.name: v for v in model.graph.input}
    outputs = {v.name: v for v in model.graph.output}
    if list(inputs) != list(input_names) or list(outputs) != list(output_names):
        raise ExportError(
            f"the exported graph has inputs {list(inputs)} and outputs {list(outputs)}, "
            f"expected {list(input_names)} and {list(output_names)}"
        )
    domains = {node.domain for node in model.graph.node} | {f.domain for f in model.functions}
    custom = sorted(d for d in domains if d not in STANDARD_DOMAINS)
    if custom:
        raise ExportError(f"the exported graph uses custom operator domains {custom}; only standard ONNX is supported")
    versions = {o.domain: o.version for o in model.opset_import}
    actual = versions.get("", versions.get("ai.onnx"))
    if actual != opset:
        raise ExportError(f"the exporter wrote ONNX opset {actual}, not the requested {opset}")
    for name, value in [*inputs.items(), *outputs.items()]:
        dims = value.type.tensor_type.shape.dim
        symbolic = bool(dims) and dims[0].HasField("dim_param")
        if graph.dynamic_batch and not symbolic:
            raise ExportError(f"'{name}' has no dynamic batch axis in the exported graph (is axis 0 the batch?)")
        if graph.dynamic_batch:
            dims[0].dim_param = BATCH_AXIS_NAME
    for name, named in graph.input_axes.items():
        dims = inputs[name].type.tensor_type.shape.dim
        for axis, label in named.items():
            if not dims[axis].HasField("dim_param"):
                raise ExportError(f"axis {axis} of input '{name}' is not symbolic in the exported graph")
            dims[axis].dim_param = label


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`vfmkit.utils.atomic.atomic_write_bytes`: parents created, a disk
    error names ``path``)."""
    atomic_write_bytes(path, data)


def _move_into_place(staged: Path, path: Path) -> None:
    """Replace ``path`` by the staged file; its external-data file (if any) moves first, a stale one is removed."""
    data = path.with_name(f"{path.name}.data")
    staged_data = staged.with_name(data.name)
    if staged_data.exists():
        os.replace(staged_data, data)
        os.replace(staged, path)
        return
    os.replace(staged, path)
    if data.is_file():
        data.unlink()
