"""TensorRT engines from exported ONNX graphs, when ``tensorrt`` is installed and a CUDA GPU is visible.

:func:`build_tensorrt_engine` is the one entry point (``vfm models export --format tensorrt`` and every task's
``export.format=tensorrt`` call it): it parses an ONNX file written by :func:`vfmkit.export.onnx.export_onnx`,
builds an engine with TensorRT's Python API (8.6 or newer) and writes it atomically:

- precision ``fp32`` (TF32 off, so it matches onnxruntime), ``fp16``, or ``int8`` (implicit quantization with an
  entropy calibrator fed from a calibration image folder or from given input batches; fp16 enabled alongside);
- one optimisation profile: the ``batch`` axis from ``min_batch`` / ``opt_batch`` / ``max_batch``; other symbolic
  axes (``height`` / ``width`` of a dynamic-resolution backbone) fixed at the graph's ``resolution`` metadata
  unless ``spatial`` gives their (min, opt, max);
- verification: the engine runs the given inputs and its outputs are compared with onnxruntime's on the same ONNX
  file (fp32: max abs difference; fp16/int8: per-sample cosine), failing below the precision's threshold.

Without TensorRT or a GPU every entry point raises :class:`TensorRTUnavailable` with one line naming what is
missing and how to get it. Engines are tied to the GPU model and the TensorRT version that built them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfmkit.errors import VfmError
from vfmkit.export.onnx import BATCH_AXIS_NAME, ExportError, write_atomically
from vfmkit.export.runtime import OnnxModel
from vfmkit.export.verify import cosine_stats, max_abs_diffs, scaled_tolerance

PRECISIONS = ("fp32", "fp16", "int8")
MIN_VERSION = (8, 6)
MIN_COSINE = {"fp16": 0.999, "int8": 0.99}
"""Default lowest accepted mean cosine (per output, engine vs onnxruntime) of reduced-precision engines."""
FP32_TOLERANCE = 1e-3
"""fp32 engines: max abs difference to onnxruntime, scaled by max(1, largest |value|)."""
MAX_CALIBRATION_IMAGES = 512
Batch = dict[str, np.ndarray]


class TensorRTUnavailable(VfmError):
    """TensorRT or a CUDA GPU is missing."""


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT can build engines here, else what is missing (one line)."""
    missing = []
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("the tensorrt package is not installed")
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    return "; ".join(missing) or None


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, checked usable (>= 8.6, GPU visible).

    Raises:
        TensorRTUnavailable: one line saying what is missing and how to get it.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise TensorRTUnavailable(
            f"TensorRT engines need the tensorrt package and a CUDA GPU: {reason}; "
            "on a machine with an NVIDIA GPU: pip install tensorrt"
        )
    import tensorrt as trt

    version = tuple(int(part) for part in trt.__version__.split(".")[:2])
    if version < MIN_VERSION:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old (need >= 8.6): pip install -U tensorrt")
    return trt


@dataclass(frozen=True)
class ShapeRange:
    """The (min, opt, max) shapes of one input in the optimisation profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def input_profiles(
    input_shapes: Mapping[str, Sequence[int | str]],
    metadata: Mapping[str, Any],
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 32,
    spatial: Mapping[str, tuple[int, int, int]] | None = None,
) -> dict[str, ShapeRange]:
    """The optimisation profile of each graph input.

    Args:
        input_shapes: input name -> shape, each axis an int or a symbolic name (as :class:`OnnxModel.input_shapes`).
        metadata: the graph's metadata; ``resolution`` (``"HxW"`` or ``"N"``) fixes ``height`` / ``width`` axes.
        min_batch, opt_batch, max_batch: range of the ``batch`` axis (1 <= min <= opt <= max).
        spatial: symbolic axis name -> (min, opt, max) for other symbolic axes, e.g. ``{"height": (224, 512, 1024)}``.

    Raises:
        VfmError: a bad batch range, or a symbolic axis with neither a range nor a resolution to fix it to.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise VfmError(f"TensorRT batch range needs 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}")
    ranges: dict[str, tuple[int, int, int]] = {BATCH_AXIS_NAME: (min_batch, opt_batch, max_batch)}
    resolution = _resolution(metadata)
    if resolution is not None:
        ranges.update({"height": (resolution[0],) * 3, "width": (resolution[1],) * 3})
    ranges.update(spatial or {})
    profiles = {}
    for name, shape in input_shapes.items():
        axes = []
        for axis in shape:
            if isinstance(axis, int):
                axes.append((axis, axis, axis))
            elif axis in ranges:
                axes.append(ranges[axis])
            else:
                raise VfmError(f"input '{name}' has a symbolic axis '{axis}': give its (min, opt, max) in spatial")
        profiles[name] = ShapeRange(*(tuple(a[i] for a in axes) for i in range(3)))
    return profiles


def _resolution(metadata: Mapping[str, Any]) -> tuple[int, int] | None:
    value = metadata.get("resolution")
    if value is None:
        return None
    text = str(value)
    height, _, width = text.partition("x")
    try:
        return int(height), int(width or height)
    except ValueError:
        return None


@dataclass
class TensorRTResult:
    """What :func:`build_tensorrt_engine` built.

    Attributes:
        engine: the serialized engine file.
        precision: ``fp32``, ``fp16`` or ``int8``.
        profiles: input name -> :class:`ShapeRange` of the optimisation profile.
        build_seconds: wall time of the build.
        tensorrt_version: the TensorRT that built it (engines only load with the same version and GPU model).
        max_abs_diff / mean_cosine: output name -> engine vs onnxruntime on the verification inputs (empty when not
            verified); ``min_cosine`` per output likewise.
    """

    engine: Path
    precision: str
    profiles: dict[str, ShapeRange]
    build_seconds: float
    tensorrt_version: str
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    mean_cosine: dict[str, float] = field(default_factory=dict)
    min_cosine: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.max_abs_diff:
            return f"TensorRT {self.precision} engine {self.engine} (not verified)"
        figures = ", ".join(
            f"{n}: max abs diff {d:.2e}, cosine mean {self.mean_cosine[n]:.5f}" for n, d in self.max_abs_diff.items()
        )
        return f"TensorRT {self.precision} engine {self.engine} vs onnxruntime: {figures}"


def build_tensorrt_engine(
    onnx_path: str | Path,
    out_path: str | Path,
    precision: str = "fp16",
    calibration: str | Path | Sequence[Sequence[np.ndarray | torch.Tensor]] | None = None,
    verify_inputs: Sequence[np.ndarray | torch.Tensor] | None = None,
    *,
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 32,
    spatial: Mapping[str, tuple[int, int, int]] | None = None,
    workspace_gib: float = 4.0,
    min_cosine: float | None = None,
) -> TensorRTResult:
    """Build a TensorRT engine from an ONNX file and verify it against onnxruntime.

    Args:
        onnx_path: the graph (from :func:`vfmkit.export.onnx.export_onnx`; a ``.data`` file beside it is read too).
        out_path: the engine file to write (``.engine``/``.plan``), atomically.
        precision: ``fp32``, ``fp16`` or ``int8``.
        calibration: int8 only, required there: a folder of images (graphs with one float (B, 3, H, W) input in
            [0, 1]; up to 512 images, resized to the profile's opt size) or a sequence of input tuples, one array
            per graph input each (batch axis first), e.g. from a task's own data.
        verify_inputs: one array per graph input (batch axis first, within the batch range), e.g. real preprocessed
            images; None skips verification.
        min_batch, opt_batch, max_batch: the ``batch`` axis range of the optimisation profile.
        spatial: (min, opt, max) of other symbolic axes (``height``, ``width``); default: fixed at the resolution
            recorded in the graph's metadata.
        workspace_gib: builder workspace memory limit.
        min_cosine: fp16/int8: lowest accepted mean cosine per output (default 0.999 fp16, 0.99 int8).

    Raises:
        TensorRTUnavailable: no tensorrt package or no GPU (one line, with the install hint).
        VfmError: a bad precision, int8 without calibration, a bad profile.
        ExportError: parsing or building failed, or the engine's outputs differ from onnxruntime's.
    """
    if precision not in PRECISIONS:
        raise VfmError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise VfmError("an int8 TensorRT engine needs calibration images: --calibration DIR (a few hundred images)")
    trt = require_tensorrt()
    reference = OnnxModel(onnx_path)
    profiles = input_profiles(reference.input_shapes, reference.metadata, min_batch, opt_batch, max_batch, spatial)
    start = time.perf_counter()
    calibrator = None
    if precision == "int8":
        batches = calibration_batches(calibration, reference, profiles)
        calibrator = make_calibrator(trt, batches, Path(out_path).with_suffix(".calibration.cache"))
    engine_bytes = _build_serialized(trt, Path(onnx_path), precision, profiles, workspace_gib, calibrator)
    out_path = Path(out_path)
    write_atomically(out_path, engine_bytes)
    result = TensorRTResult(out_path, precision, profiles, time.perf_counter() - start, trt.__version__)
    if verify_inputs is not None:
        _verify(result, TensorRTEngine(out_path), reference, verify_inputs, min_cosine)
    return result


def _build_serialized(
    trt: Any,
    onnx_path: Path,
    precision: str,
    profiles: Mapping[str, ShapeRange],
    workspace_gib: float,
    calibrator: Any,
) -> bytes:
    """Parse the ONNX file and build the serialized engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    network = builder.create_network(0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, shapes in profiles.items():
        profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build a {precision} engine from {onnx_path} (see its log above)")
    return bytes(memoryview(serialized))


def calibration_batches(
    source: str | Path | Sequence[Sequence[np.ndarray | torch.Tensor]],
    reference: OnnxModel,
    profiles: Mapping[str, ShapeRange],
) -> list[Callable[[], Batch]]:
    """Loaders of the int8 calibration batches (called one at a time, so images are decoded lazily).

    A folder feeds a single (B, 3, H, W) image input: up to :data:`MAX_CALIBRATION_IMAGES` images, resized to the
    profile's opt H x W, in batches of the opt batch size. A sequence gives one tuple of arrays per batch.

    Raises:
        VfmError: an empty folder, a folder for a graph that does not take one image input, a wrong tuple length.
    """
    names = reference.input_names
    if not isinstance(source, (str, Path)):
        batches = [tuple(source_batch) for source_batch in source]
        if not batches or any(len(b) != len(names) for b in batches):
            raise VfmError(f"calibration batches must be non-empty tuples of {len(names)} arrays ({', '.join(names)})")
        return [lambda b=b: {n: _as_array(a) for n, a in zip(names, b, strict=True)} for b in batches]
    shape = profiles[names[0]].opt
    if len(names) != 1 or len(shape) != 4 or shape[1] != 3:
        raise VfmError(
            f"a calibration folder feeds graphs with one image input (B, 3, H, W); {reference.path.name} takes "
            f"{', '.join(names)}: pass calibration batches instead"
        )
    from vfmkit.data.images import list_image_files

    files = list_image_files(source)[:MAX_CALIBRATION_IMAGES]
    size = (shape[2], shape[3])
    chunks = [files[i : i + shape[0]] for i in range(0, len(files), shape[0])]
    return [lambda chunk=chunk: {names[0]: _load_images(chunk, size)} for chunk in chunks]


def _load_images(files: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    """float32 (B, 3, H, W) in [0, 1], each image resized (bilinear, antialiased) to ``size``."""
    from vfmkit.data.images import load_image_rgb
    from vfmkit.data.preprocess import pil_to_tensor, resize

    return torch.stack([resize(pil_to_tensor(load_image_rgb(f)), size) for f in files]).numpy()


def _as_array(value: np.ndarray | torch.Tensor) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return np.ascontiguousarray(array.astype(np.float32) if array.dtype == np.float64 else array)


def make_calibrator(trt: Any, batches: Sequence[Callable[[], Batch]], cache_file: Path | None) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` feeding ``batches`` from GPU buffers; the calibration table is cached in
    ``cache_file`` (reused by a rebuild from the same graph).

    Raises:
        TensorRTUnavailable: this TensorRT has no implicit int8 calibration any more.
    """
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} has no int8 entropy calibrator; build an fp16 engine (--fp16) instead"
        )

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.first = batches[0]()
            self.buffers: dict[str, torch.Tensor] = {}

        def get_batch_size(self) -> int:
            return int(next(iter(self.first.values())).shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(batches):
                return None
            batch = self.first if self.index == 0 else batches[self.index]()
            self.index += 1
            self.buffers = {name: torch.from_numpy(batch[name]).cuda().contiguous() for name in names}
            return [int(self.buffers[name].data_ptr()) for name in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_file is not None:
                write_atomically(cache_file, bytes(memoryview(cache)))

    return EntropyCalibrator()


class TensorRTEngine:
    """A serialized engine loaded for inference on the current CUDA device.

    Call it with one array/tensor per input (graph order); it returns output name -> CUDA tensor.
    """

    def __init__(self, path: str | Path) -> None:
        trt = require_tensorrt()
        self.path = Path(path)
        self._trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ExportError(f"cannot load TensorRT engine {self.path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]

    def __call__(self, *inputs: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        if len(inputs) != len(self.input_names):
            raise ExportError(f"{self.path.name} takes {len(self.input_names)} inputs {self.input_names}")
        keep = []
        for name, value in zip(self.input_names, inputs, strict=True):
            dtype = _torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            tensor = torch.as_tensor(value).to("cuda", dtype=dtype).contiguous()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            shapes = [tuple(t.shape) for t in keep]
            raise ExportError(f"TensorRT engine {self.path.name} failed to run on inputs of shapes {shapes}")
        stream.synchronize()
        return outputs


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType``."""
    pairs = [("FLOAT", torch.float32), ("HALF", torch.float16), ("BF16", torch.bfloat16), ("INT8", torch.int8)]
    pairs += [("INT32", torch.int32), ("INT64", torch.int64), ("BOOL", torch.bool), ("UINT8", torch.uint8)]
    for name, torch_dtype in pairs:
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return torch_dtype
    raise ExportError(f"TensorRT tensor type {dtype} is not supported here")


def _verify(
    result: TensorRTResult,
    engine: TensorRTEngine,
    reference: OnnxModel,
    inputs: Sequence[np.ndarray | torch.Tensor],
    min_cosine: float | None,
) -> None:
    """Fill the result's figures from the engine vs onnxruntime on ``inputs``; fail below the thresholds."""
    arrays = [_as_array(value) for value in inputs]
    expected = reference(*arrays)
    actual = {name: value.float().cpu().numpy() for name, value in engine(*arrays).items()}
    actual = {name: actual[name] for name in expected}
    result.max_abs_diff = max_abs_diffs(actual, list(expected.values()))
    for name, value in actual.items():
        stats = cosine_stats(value, expected[name])
        result.mean_cosine[name], result.min_cosine[name] = stats.mean, stats.min
    if result.precision == "fp32":
        failed = [
            f"'{n}' max abs diff {d:.3g}"
            for n, d in result.max_abs_diff.items()
            if d > scaled_tolerance(FP32_TOLERANCE, expected[n])
        ]
    else:
        floor = min_cosine if min_cosine is not None else MIN_COSINE[result.precision]
        failed = [f"'{n}' mean cosine {c:.4f} < {floor}" for n, c in result.mean_cosine.items() if c < floor]
    if failed:
        raise ExportError(
            f"the {result.precision} TensorRT engine {result.engine.name} differs from onnxruntime: {'; '.join(failed)}"
        )
