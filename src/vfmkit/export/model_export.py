"""``vfm models export``: a registry model (or checkpoint) to a verified ONNX graph, an int8 graph, or a TensorRT
engine.

- ``onnx`` (default): the backbone graph of :mod:`vfmkit.export.backbone` (dynamic H/W for RADIO), verified with
  onnxruntime against PyTorch on the demo images shipped with vfmkit, preprocessed at the export resolution;
- ``onnx`` + ``int8``: that graph quantized (:func:`vfmkit.export.quantize.quantize_int8`); refused, and nothing
  written, when the mean summary cosine to PyTorch fp32 on those images is below ``min_cosine``;
- ``tensorrt``: the fp32 graph written beside the engine (``<out>.onnx``), then
  :func:`vfmkit.export.tensorrt.build_tensorrt_engine` in fp32, fp16 or int8 (calibrated on an image folder),
  verified against onnxruntime. TensorRT and the GPU are checked before anything is exported.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vfmkit.errors import VfmError
from vfmkit.export.backbone import BackboneExport, BackboneGraph, export_backbone, reference_images
from vfmkit.export.onnx import DEFAULT_OPSET, _move_into_place
from vfmkit.export.onnx_runner import DEFAULT_MIN_COSINE
from vfmkit.export.quantize import quantize_int8
from vfmkit.export.runtime import OnnxModel
from vfmkit.export.tensorrt import TensorRTResult, build_tensorrt_engine, require_tensorrt
from vfmkit.export.verify import CosineStats, cosine_stats, torch_outputs
from vfmkit.utils.atomic import naming_the_target

FORMATS = ("onnx", "tensorrt")


@dataclass
class ModelExport:
    """What :func:`export_model` wrote: the ONNX graph (always), and the engine for ``tensorrt``.

    Attributes:
        onnx: the fp32 export (its verification figures in ``onnx.verified``).
        path: the file the user asked for (``out``): the fp32 or int8 graph, or the engine.
        int8_cosine: ONNX int8 only: summary cosine to PyTorch fp32 on the verification images.
        tensorrt: the engine build result for ``tensorrt``.
    """

    onnx: BackboneExport
    path: Path
    int8_cosine: CosineStats | None = None
    tensorrt: TensorRTResult | None = None
    notes: list[str] = field(default_factory=list)


def check_export_options(fmt: str, int8: bool, fp16: bool, calibration: str | Path | None) -> str:
    """Validate the option combination; returns the TensorRT precision (``fp32`` for plain ONNX).

    Raises:
        VfmError: an unknown format or a combination that does not apply (one line).
    """
    if fmt not in FORMATS:
        raise VfmError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx":
        if fp16:
            raise VfmError("--fp16 applies to --format tensorrt; ONNX graphs are exported fp32, or int8 with --int8")
        if calibration is not None:
            raise VfmError("--calibration applies to --format tensorrt --int8 (onnxruntime int8 needs no calibration)")
        return "fp32"
    if int8 and fp16:
        raise VfmError("--int8 and --fp16 exclude each other (an int8 engine runs its other layers in fp16 already)")
    if int8 and calibration is None:
        raise VfmError("--format tensorrt --int8 needs --calibration DIR: a folder of images like those you will run")
    if calibration is not None and not int8:
        raise VfmError("--calibration is only used with --int8")
    return "int8" if int8 else "fp16" if fp16 else "fp32"


def export_model(
    model: str | Path,
    out: str | Path,
    resolution: int | None = None,
    fmt: str = "onnx",
    int8: bool = False,
    fp16: bool = False,
    calibration: str | Path | None = None,
    adaptors: Sequence[str] = (),
    dynamic_resolution: bool | None = None,
    opset: int = DEFAULT_OPSET,
    min_cosine: float = DEFAULT_MIN_COSINE,
    max_batch: int = 32,
) -> ModelExport:
    """Export ``model`` as ``fmt`` to ``out`` and verify it (see the module docstring).

    Args:
        model: registry id, ``hf-hub:`` source or checkpoint path.
        out: the ``.onnx`` file (``onnx``) or the engine file (``tensorrt``; its ONNX graph goes to ``out`` with the
            suffix ``.onnx``).
        resolution: N for N x N; None: the model's preferred resolution.
        fmt: ``onnx`` or ``tensorrt``.
        int8: ``onnx``: onnxruntime dynamic int8; ``tensorrt``: int8 engine calibrated on ``calibration``.
        fp16: ``tensorrt`` only: fp16 engine.
        calibration: ``tensorrt`` + ``int8``: folder of calibration images.
        adaptors: adaptor heads to load and export as extra outputs.
        dynamic_resolution: symbolic H/W (None: whenever the model allows it).
        opset: ONNX operator set.
        min_cosine: ONNX int8: lowest accepted mean summary cosine to fp32.
        max_batch: ``tensorrt``: largest batch of the optimisation profile (opt: min(8, max_batch)).

    Raises:
        VfmError: bad options, TensorRT or GPU missing, weights unavailable, int8 cosine too low, export failures.
    """
    precision = check_export_options(fmt, int8, fp16, calibration)
    if fmt == "tensorrt":
        require_tensorrt()
    from vfmkit.models.factory import load_backbone

    backbone = load_backbone(model, adaptors=list(adaptors) or None).eval()
    images = reference_images(backbone, resolution)
    out = Path(out)
    onnx_path = out if fmt == "onnx" else out.with_suffix(".onnx")
    if fmt == "onnx" and int8:
        return _export_int8(backbone, str(model), out, resolution, dynamic_resolution, opset, images, min_cosine)
    graph = export_backbone(
        backbone, onnx_path, resolution, model_id=str(model), dynamic_resolution=dynamic_resolution, opset=opset,
        verify_images=images,
    )  # fmt: skip
    if fmt == "onnx":
        return ModelExport(graph, out)
    engine = build_tensorrt_engine(
        onnx_path, out, precision, calibration, (images,), opt_batch=min(8, max_batch), max_batch=max_batch
    )
    return ModelExport(graph, out, tensorrt=engine)


def _export_int8(backbone, model_id, out, resolution, dynamic, opset, images, min_cosine) -> ModelExport:
    """fp32 graph in a temporary folder, verified; quantized; its summary cosine checked; then moved to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with naming_the_target(out), tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        graph = export_backbone(
            backbone, fp32, resolution, model_id=model_id, dynamic_resolution=dynamic, opset=opset,
            verify_images=images,
        )  # fmt: skip
        staged = quantize_int8(fp32, Path(tmp) / out.name)
        module = BackboneGraph(backbone)
        expected = torch_outputs(module, (images,), len(module.output_names))[0]
        cosine = cosine_stats(OnnxModel(staged)(images)["summary"], expected)
        if cosine.mean < min_cosine:
            raise VfmError(
                f"int8 graph of {model_id} refused: mean summary cosine to fp32 is {cosine.mean:.4f} on "
                f"{len(images)} reference images, below --min-cosine {min_cosine}; export fp32 (drop --int8)"
            )
        _move_into_place(staged, out)
    graph.path = out
    return ModelExport(graph, out, int8_cosine=cosine)
