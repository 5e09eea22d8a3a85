"""Every generated page: ``docs/`` path -> Markdown text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parents[1]


def spec_pages() -> dict[str, str]:
    """``reference/spec/<task>.md`` for every registered task."""
    from vfmkit.spec.render import render_spec_template
    from vfmkit.task import spec_class
    from vfmkit.tasks import task_names

    from .spec_reference import spec_page

    pages = {}
    for task in task_names():
        schema = spec_class(task)
        template = render_spec_template(schema, task, getattr(schema, "example", {}))
        pages[f"reference/spec/{task}.md"] = spec_page(task, schema, template, f"../../tasks/{task}.md")
    return pages


def cli_pages(titles: Callable[[str], str]) -> dict[str, str]:
    """``reference/cli.md``, from the ``vfm`` command as the console script builds it; ``titles`` names the guide
    page of each command."""
    from vfmkit.cli.docs_links import DOCS_LINE, command_page
    from vfmkit.cli.main import build_command

    from .cli_reference import cli_page

    return {"reference/cli.md": cli_page(build_command(), command_page, DOCS_LINE, titles)}


def page_title(page: str, generated: dict[str, str]) -> str:
    """The first ``# `` heading of a ``docs/`` page (written or generated), without Markdown code marks."""
    source = DOCS_DIR / page
    lines = (source.read_text() if source.is_file() else generated.get(page, "")).splitlines()
    heading = next((line[2:] for line in lines if line.startswith("# ")), page)
    return heading.replace("`", "").strip()


def tao_pages() -> dict[str, str]:
    """``reference/tao.md`` from the converter's mapping tables (a short page where this vfmkit has none)."""
    from vfmkit.tasks import task_names

    from .tao_reference import tao_page, unavailable_page

    try:
        from vfmkit.tao.tables import shared_rows, tao_tasks
    except ModuleNotFoundError as err:
        if err.name != "vfmkit.tao":
            raise
        # the converter (`vfm spec from-tao`) is not part of this vfmkit
        return {"reference/tao.md": unavailable_page("the module vfmkit.tao is missing")}
    return {"reference/tao.md": tao_page(shared_rows(), list(tao_tasks().values()), task_names())}


def other_pages() -> dict[str, str]:
    """The model zoo and the Python API pages."""
    from .api_reference import api_page
    from .zoo import zoo_page

    return {"reference/models.md": zoo_page(), "reference/api.md": api_page()}


def benchmarks_page() -> dict[str, str]:
    """``benchmarks.md``: the repository's ``BENCHMARKS.md`` as it is, under a line saying so (the measured figures
    live in one file, which the README links on a checkout and the site shows)."""
    text = (DOCS_DIR.parent / "BENCHMARKS.md").read_text()
    title, _, body = text.partition("\n")
    note = "*This page is the repository's `BENCHMARKS.md`, included as it is when the site is built.*"
    return {"benchmarks.md": f"{title}\n\n{note}\n{body}"}


def generated_pages() -> dict[str, str]:
    """Every generated page."""
    pages = {**spec_pages(), **tao_pages(), **other_pages(), **benchmarks_page()}
    return {**pages, **cli_pages(lambda page: page_title(page, pages))}
