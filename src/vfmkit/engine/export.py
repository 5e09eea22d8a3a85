"""The export skeleton of every task: checkpoint -> ONNX (opset >= 17, dynamic batch, metadata inside) -> verified
with onnxruntime against PyTorch on real preprocessed inputs from the dataset."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from vfmkit._version import __version__
from vfmkit.engine.evaluate import required_checkpoint
from vfmkit.engine.frozen import submodule
from vfmkit.engine.resume import run_dir_of
from vfmkit.engine.taskdef import ExportPlan, ExportResult, TaskDef, TaskFamily, Trained
from vfmkit.engine.trained import load_trained
from vfmkit.errors import VfmError


def common_metadata(taskdef: TaskDef, trained: Trained, resolution: int) -> dict[str, str]:
    """Metadata every exported task graph carries: task, variant, resolution, backbone, preprocessing, version."""
    backbone = submodule(trained.model, taskdef.backbone_path)
    prep = backbone.preprocessing
    meta = {
        "task": taskdef.name,
        "resolution": str(resolution),
        "backbone": str(trained.spec.model.backbone),
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
            f"export.resolution must be a multiple of {step} for {trained.spec.model.backbone}, got {resolution}"
        )
    taskdef.check_export_resolution(trained, resolution)


def export(family: TaskFamily, spec: BaseModel) -> ExportResult:
    """Export ``export.checkpoint`` to ``export.out`` (default ``<run>/export/model.onnx``) and verify it."""
    from vfmkit.export.onnx import export_onnx
    from vfmkit.export.verify import verify_onnx

    checkpoint = required_checkpoint(spec.export.checkpoint, "export", family.name)
    taskdef, trained = load_trained(family, checkpoint)
    resolution = spec.export.resolution or trained.spec.model.resolution
    _check_resolution(taskdef, trained, resolution)
    plan: ExportPlan = taskdef.export_plan(trained, resolution)
    out = Path(spec.export.out or run_dir_of(trained.checkpoint) / "export" / "model.onnx")
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
    diff, samples = None, 0
    if spec.export.verify:
        inputs = taskdef.verification_inputs(spec, trained, resolution)
        result = verify_onnx(out, plan.module, inputs, tolerance=spec.export.tolerance)
        diff, samples = result.max_abs_diff, len(inputs[0])
        print(
            f"onnxruntime vs PyTorch on {samples} real samples: max abs diff {diff:.3g} "
            f"(tolerance {spec.export.tolerance:g})"
        )
    return ExportResult(
        out, list(plan.input_names), list(plan.output_names), spec.export.opset, diff, spec.export.tolerance, samples
    )
