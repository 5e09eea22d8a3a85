"""int8 ONNX graphs for the CPU: onnxruntime's dynamic quantization of the MatMul/Gemm weights.

:func:`quantize_int8` rewrites an fp32 graph so the weight matrices of its MatMul/Gemm nodes are stored as int8
(per output channel, symmetric) and multiplied with activations quantized on the fly per batch
(``DynamicQuantizeLinear`` + ``MatMulInteger``); activation-by-activation products (attention scores) stay fp32.
Nodes under the patch embedding (``patch_generator`` / ``patch_embed`` / ``conv1``), the input conditioner and
RADIO's feature normaliser stay fp32: they see raw pixels or whiten the output, and keeping them costs little time.
On a ViT-B RADIO at 224 px this runs ~3x faster than PyTorch eager on 2 CPU threads, at a summary cosine of ~0.9997
to fp32 (see BENCHMARKS.md); check the cosine on your own images (:func:`vfmkit.export.verify.cosine_stats`).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from vfmkit.export.onnx import ExportError, _move_into_place, _quiet, _require_onnx
from vfmkit.utils.atomic import DISK_ERRNOS, naming_the_target

INT8_OP_TYPES = ("MatMul", "Gemm")
FP32_SCOPES = ("/patch_generator/", "/patch_embed/", "/conv1", "/input_conditioner/", "/feature_normalizer/")
"""Node-name fragments (module scopes as the TorchScript exporter names nodes) whose MatMul/Gemm stay fp32."""
INT8_PRECISION = (
    "int8: onnxruntime dynamic quantization of the MatMul/Gemm weights (int8 per channel, activations quantized "
    "per batch); patch embedding and normalisers in fp32"
)


def fp32_nodes(model) -> list[str]:
    """Names of the MatMul/Gemm nodes of ``model`` (an ``onnx.ModelProto``) that :func:`quantize_int8` keeps fp32."""
    return [
        node.name
        for node in model.graph.node
        if node.op_type in INT8_OP_TYPES and any(scope in node.name for scope in FP32_SCOPES)
    ]


def quantize_int8(source: str | Path, path: str | Path) -> Path:
    """Write an int8 version of the fp32 graph ``source`` to ``path`` (atomically; a ``.data`` file beside it when
    the source keeps its weights externally).

    The metadata is kept, with ``precision`` set to :data:`INT8_PRECISION`.

    Raises:
        ExportError: onnxruntime's quantization tools are missing or fail, or the result fails ``onnx.checker``.
    """
    _require_onnx()
    import onnx

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ExportError("int8 quantization needs onnxruntime's quantization tools: pip install onnxruntime") from exc
    source, path = Path(source), Path(path)
    external = source.with_name(f"{source.name}.data").is_file()
    model = onnx.load(str(source))
    keep = fp32_nodes(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming_the_target(path), tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        try:
            with _quiet(io.StringIO()):
                quantize_dynamic(
                    model,
                    staged,
                    op_types_to_quantize=list(INT8_OP_TYPES),
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=keep,
                    use_external_data_format=external,
                )
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
                raise  # named by naming_the_target
            raise ExportError(f"int8 quantization of {source} failed: {type(exc).__name__}: {exc}") from exc
        _set_precision(staged, external)
        _move_into_place(staged, path)
    return path


def _set_precision(staged: Path, external: bool) -> None:
    """Record the precision in the quantized file's metadata and check it."""
    import onnx

    model = onnx.load(str(staged))
    entries = {prop.key: prop.value for prop in model.metadata_props}
    entries["precision"] = INT8_PRECISION
    del model.metadata_props[:]
    for key, value in sorted(entries.items()):
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(
        model, str(staged), save_as_external_data=external, all_tensors_to_one_file=True, location=f"{staged.name}.data"
    )
    try:
        onnx.checker.check_model(str(staged))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the int8 graph fails onnx.checker: {str(exc).strip().splitlines()[0]}") from exc
