"""The ``vfm`` command line: a thin shim over the library functions.

Commands: ``vfm models`` / ``vfm models show ID`` / ``vfm models export ID``, ``vfm embed``, ``vfm pca``,
``vfm knn``, ``vfm demo``; ``vfm index build``, ``vfm search``, ``vfm dedup`` and ``vfm serve`` (in
:mod:`vfmkit.cli.collection`). Task
commands of the form ``vfm <task> <action> -c spec.yaml key=value`` are added as one typer group per task
(``app.add_typer(group, name=task)``).

Errors a user can fix (:class:`vfmkit.errors.VfmError`, bad usage) print ``error: <message>`` on one line to
stderr and exit with code 2, without a traceback; every other way a command ends is in :mod:`vfmkit.cli.failures`.
Results go to stdout; progress goes to stderr. The console script enters through :mod:`vfmkit.cli.entry`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

import typer

from vfmkit.cli import collection, tasks
from vfmkit.cli.docs_links import add_doc_links
from vfmkit.cli.failures import run_command, user_message
from vfmkit.errors import VfmError

__all__ = ["app", "build_command", "main", "user_message"]

app = typer.Typer(
    name="vfm",
    help="Vision foundation models (C-RADIO, DINOv2, CLIP towers): feature extraction, k-NN and PCA; seven trainable "
    "tasks (classify, segment, change, detect, universal, clip, distill); ONNX, int8 and TensorRT export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="List the backbone registry (`vfm models`), show one entry (`vfm models show ID`) or export one to ONNX / "
    "TensorRT (`vfm models export ID`)."
)
app.add_typer(models_app, name="models")
tasks.register(app)

MODEL_HELP = "registry id or alias (see `vfm models`), hf-hub:<repo>, or a local checkpoint file/folder"
RESOLUTION_HELP = "resize every image to N x N (a multiple of the patch size); default: the model's preferred size"
RUNTIME_HELP = "torch (PyTorch) or onnxruntime (CPU; the ONNX export is made once and cached, checked on the 1st batch)"
INT8_HELP = "with --runtime onnxruntime: int8 weights (dynamic quantization), cosine to fp32 reported and checked"
MIN_COSINE_HELP = "with --int8: refuse int8 output whose mean summary cosine to fp32 on the first batch is lower"


class Runtime(str, Enum):
    """How `vfm embed` / `pca` / `knn` run the backbone."""

    torch = "torch"
    onnxruntime = "onnxruntime"


class DType(str, Enum):
    """PyTorch compute precision of `vfm embed` (autocast)."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Device(str, Enum):
    """Where PyTorch runs."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ExportFormat(str, Enum):
    """What `vfm models export` writes."""

    onnx = "onnx"
    tensorrt = "tensorrt"


def _model_name(value: str) -> str:
    """``--model`` callback: an empty name is an error (as a path it would mean the current folder)."""
    from vfmkit.models.factory import require_model_name

    require_model_name(value)
    return value


class What(str, Enum):
    """Which features `vfm embed` stores."""

    summary = "summary"
    spatial = "spatial"
    both = "both"


# --- models -------------------------------------------------------------------------------------------------------


def _format_params(params_m: float | None) -> str:
    if params_m is None:
        return "-"
    return f"{params_m:.0f}M" if params_m >= 10 else f"{params_m:.1f}M"


def weights_source(entry) -> str:
    """Where an entry's weights come from: its Hub source, where else they are published (e.g. NGC, to pass as a
    local file), or random init for test variants."""
    if entry.source:
        return entry.source
    if entry.test_only:
        return "random init (test variant)"
    where = entry.extra.get("weights") or "not on the Hugging Face Hub"
    return f"{where} (load with checkpoint=<file>)"


def models_table(include_test: bool = False) -> str:
    """The registry as an aligned text table: id, family, params, resolution, license, source."""
    from vfmkit.models.registry import list_backbones

    header = ("id", "family", "params", "resolution", "license", "source")
    rows = [
        (
            e.id,
            e.family,
            _format_params(e.params_m),
            f"{e.preferred_resolution} (max {e.max_resolution})",
            e.license,
            weights_source(e),
        )
        for e in list_backbones(include_test=include_test)
    ]
    return aligned_table(header, rows)


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows of text cells as columns padded to their widest cell, header first."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context, all_: bool = typer.Option(False, "--all", help="include the tiny random-init test variants")
) -> None:
    """List the registered backbones."""
    if ctx.invoked_subcommand is None:
        typer.echo(models_table(include_test=all_))


@models_app.command("show")
def models_show(model_id: str = typer.Argument(..., help="registry id or alias")) -> None:
    """Print every field of one registry entry."""
    from vfmkit.models.registry import resolve_entry

    entry = resolve_entry(model_id)
    for item in dataclasses.fields(entry):
        value = getattr(entry, item.name)
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True) if value else "-"
        elif isinstance(value, tuple):
            value = ", ".join(str(v) for v in value) or "-"
        elif value is None:
            value = "-"
        typer.echo(f"{item.name}: {value}")


@models_app.command("export")
def models_export(
    model_id: str = typer.Argument(..., help=MODEL_HELP),
    out: Path = typer.Option(..., "--out", "-o", help=".onnx file, or the engine file with --format tensorrt"),
    resolution: int | None = typer.Option(None, "--resolution", "-r", help="export at N x N; default: preferred"),
    fmt: ExportFormat = typer.Option(ExportFormat.onnx, "--format", help="onnx, or tensorrt (GPU + tensorrt)"),
    int8: bool = typer.Option(False, "--int8", help="onnx: onnxruntime int8 weights; tensorrt: int8 engine"),
    fp16: bool = typer.Option(False, "--fp16", help="tensorrt: fp16 engine"),
    calibration: Path | None = typer.Option(None, "--calibration", help="tensorrt --int8: calibration image folder"),
    adaptor: list[str] | None = typer.Option(None, "--adaptor", help="also export this adaptor head (repeatable)"),
    static: bool = typer.Option(False, "--static-resolution", help="fix H and W even where they could be dynamic"),
    opset: int = typer.Option(17, "--opset", min=17, help="ONNX operator set"),
    min_cosine: float = typer.Option(0.995, "--min-cosine", help="--int8 (onnx): lowest mean summary cosine to fp32"),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="tensorrt: largest batch of the engine"),
) -> None:
    """Export a backbone (image in [0, 1] -> summary, features) to ONNX or TensorRT, verified against PyTorch."""
    from vfmkit.export.model_export import export_model

    result = export_model(
        model_id, out, resolution, fmt.value, int8, fp16, calibration, adaptor or (),
        dynamic_resolution=False if static else None, opset=opset, min_cosine=min_cosine, max_batch=max_batch,
    )  # fmt: skip
    graph = result.onnx
    typer.echo(f"exported {model_id}: {graph.metadata['resolution_rule']}")
    typer.echo(f"  outputs: {', '.join(json.loads(graph.metadata['outputs']))}")
    for check in graph.verified:
        typer.echo(f"  {check}")
    if result.int8_cosine is not None:
        typer.echo(f"  int8 summary cosine to PyTorch fp32 on the reference images: {result.int8_cosine}")
    if result.tensorrt is not None:
        typer.echo(f"  {result.tensorrt} (ONNX graph: {graph.path})")
    typer.echo(f"wrote {result.path}")


# --- feature extraction -------------------------------------------------------------------------------------------


def _runtime(
    runtime: Runtime, int8: bool, min_cosine: float, device: Device = Device.auto, dtype=DType.fp32, compile_=False
):
    from vfmkit.features.runners import RuntimeOptions

    return RuntimeOptions(runtime.value, int8, min_cosine, dtype.value, compile_, device.value)


def _print_skipped(skipped: Sequence) -> None:
    if skipped:
        typer.echo(f"skipped {len(skipped)} unreadable image(s):")
        for item in skipped:
            typer.echo(f"  {item.error}")


class StoreDType(str, Enum):
    """How `vfm embed --out FOLDER` stores rows."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


@app.command()
def embed(
    source: str = typer.Argument(
        ..., help="image folder (recursive), glob pattern, text file of image paths, or WebDataset .tar shard(s)"
    ),
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP, callback=_model_name),
    resolution: int | None = typer.Option(None, "--resolution", "-r", help=RESOLUTION_HELP),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="images per forward pass"),
    out: Path = typer.Option(
        Path("embeddings.safetensors"), "--out", "-o", help="a folder (sharded, resumable) or one .safetensors file"
    ),
    what: What = typer.Option(What.summary, "--what", help="summary (N,C), spatial (N,D,h,w), or both"),
    adaptor: list[str] | None = typer.Option(None, "--adaptor", help="also store this adaptor head (repeatable)"),
    shard_size: int | None = typer.Option(None, "--shard-size", min=1, help="folder output: images per shard [10000]"),
    store_dtype: StoreDType | None = typer.Option(
        None, "--store-dtype", help="folder output: fp32 (default), fp16 or bf16"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="folder output: delete its shards and start over"),
    devices: int = typer.Option(1, "--devices", min=1, help="folder output: processes on this machine (1 per GPU)"),
    runtime: Runtime = typer.Option(Runtime.torch, "--runtime", help=RUNTIME_HELP),
    int8: bool = typer.Option(False, "--int8", help=INT8_HELP),
    min_cosine: float = typer.Option(0.995, "--min-cosine", help=MIN_COSINE_HELP),
    device: Device = typer.Option(Device.auto, "--device", help="torch: auto (CUDA when visible), cpu or cuda"),
    dtype: DType = typer.Option(DType.fp32, "--dtype", help="torch: fp32, or bf16 / fp16 autocast (fp16: GPU only)"),
    compile_: bool = typer.Option(False, "--compile", help="torch: torch.compile the backbone"),
) -> None:
    """Extract features of every image of SOURCE: into a folder of shards (resumable; torchrun or --devices N for
    several processes), or into one safetensors file plus an index of files."""
    options = _runtime(runtime, int8, min_cosine, device, dtype, compile_)
    if out.suffix != ".safetensors":
        from vfmkit.features.sharded import DEFAULT_SHARD_SIZE, embed_to_folder

        result = embed_to_folder(
            source, model, out, resolution, batch_size, what.value, adaptor or (), shard_size or DEFAULT_SHARD_SIZE,
            (store_dtype or StoreDType.fp32).value, overwrite, devices, runtime=options,
        )  # fmt: skip
        if int(os.environ.get("RANK", "0") or 0) != 0:
            return  # under torchrun, rank 0 reports
        shapes = ", ".join(f"{key} {tuple(shape)}" for key, shape in result.tensors.items())
        typer.echo(f"embedded {result.num_rows} images at {_size(result.resolution)} (per row: {shapes})")
        typer.echo(f"shards:   {result.shards_written} written, {result.shards_reused} already complete")
        typer.echo(f"manifest: {result.manifest}")
        _print_skipped(result.skipped)
        return
    _refuse_folder_options(out, shard_size, store_dtype, overwrite, devices)
    from vfmkit.features.embed import embed_source

    result = embed_source(
        source, model, out, resolution, batch_size, what.value, adaptors=adaptor or (), runtime=options
    )
    shapes = ", ".join(f"{key} {tuple(value.shape)}" for key, value in result.embeddings.tensors.items())
    typer.echo(f"embedded {len(result.embeddings.files)} images at {_size(result.embeddings.resolution)}: {shapes}")
    typer.echo(f"features: {result.out}")
    typer.echo(f"index:    {result.index} (rows in this order)")
    _print_skipped(result.embeddings.skipped)


def _refuse_folder_options(out: Path, shard_size, store_dtype, overwrite: bool, devices: int) -> None:
    """The single-file layout has no shards, resume or ranks: those options need --out FOLDER."""
    given = [
        name
        for name, on in (
            ("--shard-size", shard_size is not None),
            ("--store-dtype", store_dtype is not None),
            ("--overwrite", overwrite),
            ("--devices", devices > 1),
            ("torchrun", int(os.environ.get("WORLD_SIZE", "1") or 1) > 1),
        )
        if on
    ]
    if given:
        raise VfmError(f"{', '.join(given)}: only with --out FOLDER (sharded output), not a .safetensors file")


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@app.command()
def pca(
    source: str = typer.Argument(..., help="image folder (recursive), glob pattern, or text file of image paths"),
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP, callback=_model_name),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the PNG pictures"),
    resolution: int | None = typer.Option(None, "--resolution", "-r", help=RESOLUTION_HELP),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1, help="images per forward pass"),
    runtime: Runtime = typer.Option(Runtime.torch, "--runtime", help=RUNTIME_HELP),
    int8: bool = typer.Option(False, "--int8", help=INT8_HELP),
    min_cosine: float = typer.Option(0.995, "--min-cosine", help=MIN_COSINE_HELP),
) -> None:
    """Draw the first 3 principal components of the spatial features as RGB, beside each image (PNG)."""
    from vfmkit.features.pca import pca_source

    result = pca_source(source, model, out, resolution, batch_size, runtime=_runtime(runtime, int8, min_cosine))
    typer.echo(f"wrote {len(result.pictures)} PCA picture(s) to {out}")
    _print_skipped(result.skipped)


@app.command()
def knn(
    train: Path = typer.Option(..., "--train", help="training images, one sub-folder per class"),
    val: Path = typer.Option(..., "--val", help="validation images, one sub-folder per class"),
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP, callback=_model_name),
    k: int = typer.Option(20, "--k", min=1, help="neighbours per image"),
    temperature: float = typer.Option(0.07, "--temperature", "-t", min=1e-6, help="vote weight exp(similarity/T)"),
    resolution: int | None = typer.Option(None, "--resolution", "-r", help=RESOLUTION_HELP),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="images per forward pass"),
    runtime: Runtime = typer.Option(Runtime.torch, "--runtime", help=RUNTIME_HELP),
    int8: bool = typer.Option(False, "--int8", help=INT8_HELP),
    min_cosine: float = typer.Option(0.995, "--min-cosine", help=MIN_COSINE_HELP),
) -> None:
    """k-NN classification of VAL images by their nearest TRAIN images (cosine, weighted votes); top-1/top-5."""
    from vfmkit.features.knn import knn_evaluate

    options = _runtime(runtime, int8, min_cosine)
    result = knn_evaluate(train, val, model, k, temperature, resolution, batch_size, runtime=options)
    typer.echo(format_knn(result))
    _print_skipped(result.skipped)


def format_knn(result) -> str:
    """Human-readable k-NN result: the headline and a per-class table."""
    lines = [
        f"k-NN (k={result.k}, T={result.temperature:g}): {result.num_train} train / {result.num_val} val images, "
        f"{len(result.classes)} classes",
        f"top-1 {result.top1:.2f}%   top-5 {result.top5:.2f}%",
    ]
    width = max(len("class"), *(len(name) for name in result.per_class))
    lines.append(f"  {'class'.ljust(width)}  top-1 correct / images")
    for name, count in result.per_class.items():
        lines.append(f"  {name.ljust(width)}  {count.correct} / {count.total}")
    return "\n".join(lines)


@app.command()
def demo(
    model: str = typer.Option("test-radio-v2-tiny", "--model", "-m", help=MODEL_HELP, callback=_model_name),
    out: Path = typer.Option(Path("vfm-demo"), "--out", "-o", help="output folder"),
) -> None:
    """Embed the images shipped with vfmkit, draw PCA pictures and score k-NN: the whole path in seconds."""
    from vfmkit.features.demo import run_demo

    result = run_demo(model, out)
    typer.echo(f"vfm demo with {result.model}: {result.num_images} images in {result.seconds:.1f} s")
    typer.echo(f"  features:     {result.features}")
    typer.echo(f"  index:        {result.index}")
    typer.echo(f"  PCA pictures: {result.pca_dir}/ ({len(result.pictures)} PNGs)")
    typer.echo(f"  k-NN:         top-1 {result.knn.top1:.2f}%  top-5 {result.knn.top5:.2f}% -> {result.knn_file}")
    if result.random_init:
        typer.echo("  (random-init test model: the k-NN score reflects colour and texture statistics only)")


collection.register(app)  # index build, search, dedup, serve: listed after the feature commands above


# --- entry point --------------------------------------------------------------------------------------------------


def build_command():
    """The ``vfm`` click command of the typer app, every command's help ending with the link to its page."""
    command = typer.main.get_command(app)
    add_doc_links(command)
    return command


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``vfm`` with ``argv`` (default: the process arguments) and exit through the one error path
    (:func:`vfmkit.cli.failures.run_command`: user errors exit 2 with one ``error:`` line, Ctrl-C 130, anything
    unexpected 1 with its traceback in a file)."""
    args = [str(a) for a in argv] if argv is not None else sys.argv[1:]
    run_command(build_command, args)


if __name__ == "__main__":
    main()
