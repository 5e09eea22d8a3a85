"""``vfm <task> <action> -c spec.yaml key=value ...`` and ``vfm spec init|show``: thin shims over
:class:`vfmkit.engine.Task` and the spec renderer."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
EXTRA_COMMANDS = {"clip": "vfmkit.cli.clip"}
"""Task -> the CLI module whose ``register(group)`` adds the task's commands beyond the four verbs."""
SPEC_HELP = "spec YAML file (`vfm spec init <task>` writes one)"

spec_app = typer.Typer(help="Write a commented starting spec (`init`) or print a resolved spec (`show`).")


def _task_group(task: str) -> typer.Typer:
    group = typer.Typer(help=f"{task}: train, evaluate, predict, export (`-c spec.yaml key=value ...`)")

    def make(action: str):
        def command(
            ctx: typer.Context, config: Path | None = typer.Option(None, "--config", "-c", help=SPEC_HELP)
        ) -> None:
            from vfmkit.task import Task

            Task(task, config, ctx.args).run(action)

        command.__doc__ = f"{action.capitalize()} ({task}); dotted key=value overrides follow the options."
        return command

    for action in ("train", "evaluate", "predict", "export"):
        group.command(action, context_settings=EXTRA)(make(action))
    if task in EXTRA_COMMANDS:
        importlib.import_module(EXTRA_COMMANDS[task]).register(group)
    return group


@spec_app.command("init")
def spec_init(
    task: str = typer.Argument(..., help="task name, e.g. classify"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write here instead of printing"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write a commented starting spec with every key, its default and what it means."""
    from vfmkit.errors import VfmError
    from vfmkit.spec.render import render_spec_template
    from vfmkit.task import spec_class

    schema = spec_class(task)
    text = render_spec_template(schema, task, getattr(schema, "example", {}))
    if out is None:
        typer.echo(text, nl=False)
        return
    if out.exists() and not force:
        raise VfmError(f"{out} exists; pass --force to overwrite it")
    out.write_text(text)
    typer.echo(f"wrote {out}")


@spec_app.command("show", context_settings=EXTRA)
def spec_show(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help=SPEC_HELP),
    task: str | None = typer.Option(None, "--task", "-t", help="task of the spec (default: the one it validates as)"),
) -> None:
    """Print the resolved spec: defaults <- file <- key=value overrides, validated, paths made absolute."""
    from vfmkit.spec.render import render_resolved
    from vfmkit.task import Task, infer_task

    task = task or infer_task(config, ctx.args)
    typer.echo(render_resolved(Task(task, config, ctx.args).spec), nl=False)


@spec_app.command("from-tao", context_settings=EXTRA)
def spec_from_tao(
    ctx: typer.Context,
    tao_spec: Path = typer.Argument(..., help="TAO experiment spec (YAML; ${...} interpolations and ??? allowed)"),
    task: str | None = typer.Option(
        None, "--task", "-t", help="TAO task: classification_pyt, rtdetr, dino, segformer, ... (default: inferred)"
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the vfmkit spec here instead of printing it"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Convert a TAO spec into a commented vfmkit spec; vfmkit key=value settings follow (they fill ???)."""
    from vfmkit.tao import convert_tao_file

    result = convert_tao_file(tao_spec, task, ctx.args, out, force)
    conversion = result.conversion
    if out is None:
        typer.echo(result.text, nl=False)
    summary = (
        f"converted the TAO {conversion.task.name} spec into a vfmkit {conversion.task.vfm_task} spec: "
        f"{len(conversion.values)} key(s) set, {len(conversion.unmapped)} TAO key(s) or section(s) not converted "
        "(listed at the top with the reason)"
    )
    typer.echo(f"wrote {out}" if out else summary, err=out is None)
    if out is not None:
        typer.echo(summary)
    holes = conversion.placeholders
    if holes:
        where = f"in {out} " if out else ""
        typer.echo(f"fill in {where}before training (or pass key=value): {', '.join(holes)}", err=out is None)
    elif out is not None:
        typer.echo(f"next: vfm {conversion.task.vfm_task} train -c {out}")


def register(app: typer.Typer) -> None:
    """Add ``spec`` and one group per task to the ``vfm`` app."""
    from vfmkit.tasks import ALIASES, task_names

    app.add_typer(spec_app, name="spec")
    for task in task_names():
        app.add_typer(_task_group(task), name=task)
    for alias, task in ALIASES.items():
        app.add_typer(_task_group(task), name=alias, hidden=True)
