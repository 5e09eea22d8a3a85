"""``vfm clip zeroshot`` and ``vfm clip models``: the clip commands beyond train/evaluate/predict/export (thin shims
with lazy imports; added to the ``clip`` group by :func:`register`)."""

from __future__ import annotations

from pathlib import Path

import typer

MODEL_HELP = "CLIP registry id or alias (`vfm clip models`), or a `vfm clip train` run folder / .ckpt file"


def register(group: typer.Typer) -> None:
    """Add ``zeroshot`` and ``models`` to the ``vfm clip`` group."""
    group.command("zeroshot")(zeroshot)
    group.command("models")(models)


def zeroshot(
    source: str = typer.Argument(..., help="images: a folder (class folders give accuracy), glob or list file"),
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    classes: Path = typer.Option(..., "--classes", "-c", help="class names, one per line"),
    templates: str = typer.Option("openai", "--templates", "-t", help="openai (80), simple (7) or a templates file"),
    out: Path = typer.Option(Path("zeroshot.csv"), "--out", "-o", help="CSV of labels per image"),
    resolution: int | None = typer.Option(None, "--resolution", "-r", help="input side (default: the model's)"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="images per forward pass"),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="labels kept per image"),
) -> None:
    """Zero-shot labels for every image of SOURCE (CSV); top-1/top-5 and mean per-class recall for class folders."""
    from vfmkit.tasks.clip.hooks import load_for_inference
    from vfmkit.tasks.clip.zeroshot import zeroshot_source

    clip_model, default_resolution = load_for_inference(model)
    result = zeroshot_source(
        source, clip_model, classes, templates, out, batch_size, resolution or default_resolution, top_k
    )
    typer.echo(f"labelled {len(result.files)} image(s) with {len(result.class_names)} classes -> {result.csv_path}")
    if result.no_accuracy:
        typer.echo(f"accuracy not computed: {result.no_accuracy}")
    if result.metrics is not None:
        m = result.metrics
        top5 = "-" if m["top5"] != m["top5"] else f"{100 * m['top5']:.2f}%"  # NaN with fewer than 5 classes
        typer.echo(
            f"top-1 {100 * m['top1']:.2f}%  top-5 {top5}  mean per-class recall {100 * m['mean_per_class_recall']:.2f}%"
        )


def models(all_: bool = typer.Option(False, "--all", help="include the tiny random-init test models")) -> None:
    """List the CLIP registry: id, family, embedding width, text tower, adaptors, aliases."""
    from vfmkit.cli.main import aligned_table
    from vfmkit.models.clip_zoo import CLIP_TABLE_HEADER, clip_model_rows

    typer.echo(aligned_table(CLIP_TABLE_HEADER, clip_model_rows(include_test=all_)))
