"""The export skeleton of every task: checkpoint -> ONNX (opset >= 17, dynamic batch, metadata inside) -> verified
with onnxruntime against PyTorch on real preprocessed inputs from the dataset."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from vfmkit._version import __version__
from vfmkit.engine.evaluate import load_target
from vfmkit.engine.frozen import submodule
from vfmkit.engine.taskdef import ExportPlan, ExportResult, TaskDef, TaskFamily, Trained
from vfmkit.errors import VfmError


def common_metadata(taskdef: TaskDef, trained: Trained, resolution: int) -> dict[str, str]:
    """Metadata every exported task graph carries: task, variant, resolution, backbone, preprocessing, version."""
    backbone = submodule(trained.model, taskdef.backbone_path)
    prep = backbone.preprocessing
    meta = {
        "task": taskdef.name,
        "resolution": str(resolution),
        "backbone": taskdef.backbone_id(trained.spec),
        "mean": json.dumps(list(prep.mean)),
        "std": json.dumps(list(prep.std)),
        "vfmkit_version": __version__,
    }
    if taskdef.variant:
        meta["variant"] = taskdef.variant
    return meta


def _check_resolution(taskdef: TaskDef, trained: Trained, resolution: int) -> None:
    step = submodule(trained.model, taskdef.backbone_path).preprocessing.resolution_step
    if resolution % step:
        raise VfmError(
            f"export.resolution must be a multiple of {step} for {taskdef.backbone_id(trained.spec)}, got {resolution}"
        )
    taskdef.check_export_resolution(trained, resolution)


def _export_one(taskdef, trained, spec, plan: ExportPlan, out: Path, resolution: int) -> tuple[float | None, int]:
    """Export one plan to ``out`` and verify it; (max abs diff or None, verified samples)."""
    from vfmkit.export.onnx import export_onnx
    from vfmkit.export.verify import verify_onnx

    metadata = {**common_metadata(taskdef, trained, resolution), **plan.metadata}
    metadata.pop("vfmkit_version")  # export_onnx writes it itself
    export_onnx(
        plan.module, plan.example_inputs, out, plan.input_names, plan.output_names, metadata, opset=spec.export.opset
    )
    shapes = ", ".join(
        f"'{n}' {tuple(t.shape[1:])}" for n, t in zip(plan.input_names, plan.example_inputs, strict=True)
    )
    print(
        f"exported {out} (opset {spec.export.opset}; inputs {shapes} per sample; outputs "
        f"{', '.join(repr(n) for n in plan.output_names)})"
    )
    if not spec.export.verify:
        return None, 0
    inputs = plan.verify_inputs or taskdef.verification_inputs(spec, trained, resolution)
    result = verify_onnx(out, plan.module, inputs, tolerance=spec.export.tolerance)
    print(
        f"onnxruntime vs PyTorch on {len(inputs[0])} real samples: max abs diff {result.max_abs_diff:.3g} "
        f"(tolerance {spec.export.tolerance:g})"
    )
    return result.max_abs_diff, len(inputs[0])


def _tensorrt_engine(taskdef, trained, spec, plan: ExportPlan, onnx: Path, resolution: int) -> Path:
    """A TensorRT engine (``<graph>.engine``) built from the exported graph and, unless ``export.verify=false``,
    verified against onnxruntime on the task's real verification inputs; returns its path."""
    from vfmkit.export.tensorrt import build_tensorrt_engine

    inputs = None
    if spec.export.verify:
        inputs = plan.verify_inputs or taskdef.verification_inputs(spec, trained, resolution)
    max_batch = max(spec.export.max_batch, len(inputs[0]) if inputs else 1)
    result = build_tensorrt_engine(
        onnx,
        onnx.with_suffix(".engine"),
        spec.export.precision,
        calibration=spec.export.calibration,
        verify_inputs=inputs,
        opt_batch=min(8, max_batch),
        max_batch=max_batch,
    )
    print(f"{result} (built in {result.build_seconds:.0f} s with TensorRT {result.tensorrt_version})")
    return result.engine


def export(family: TaskFamily, spec: BaseModel) -> ExportResult:
    """Export ``export.checkpoint`` (or the task's pre-trained model, see
    :func:`~vfmkit.engine.evaluate.load_target`) to ``export.out`` (default ``<run>/export/model.onnx``) and verify
    it."""
    if spec.export.format == "tensorrt":  # refused before anything is loaded or written
        from vfmkit.export.tensorrt import require_tensorrt

        if spec.export.precision == "int8" and spec.export.calibration is None:
            raise VfmError("export.precision=int8 needs export.calibration: a folder of a few hundred images")
        require_tensorrt()
    taskdef, trained, base = load_target(family, spec, "export")
    resolution = spec.export.resolution or taskdef.resolution(trained.spec)
    _check_resolution(taskdef, trained, resolution)
    out = Path(spec.export.out or base / "export" / "model.onnx")
    plans = taskdef.export_plans(trained, resolution, spec)
    files, diffs, samples = [], [], []
    for plan in plans:
        target = out.with_name(f"{out.stem}{plan.suffix}{out.suffix or '.onnx'}")
        diff, count = _export_one(taskdef, trained, spec, plan, target, resolution)
        files.append(target)
        diffs.append(diff)
        samples.append(count)
    if spec.export.format == "tensorrt":
        pairs = list(zip(plans, files, strict=True))
        files += [_tensorrt_engine(taskdef, trained, spec, plan, onnx, resolution) for plan, onnx in pairs]
    taskdef.after_export(trained, files)
    worst = None if any(d is None for d in diffs) else max(diffs)
    first = plans[0]
    return ExportResult(
        files[0],
        list(first.input_names),
        list(first.output_names),
        spec.export.opset,
        worst,
        spec.export.tolerance,
        samples[0],
        files,
    )
