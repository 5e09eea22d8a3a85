"""Every generated page: ``docs/`` path -> Markdown text."""

from __future__ import annotations


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


def cli_pages() -> dict[str, str]:
    """``reference/cli.md``, from the ``vfm`` command as the console script builds it."""
    from vfmkit.cli.docs_links import DOCS_LINE, command_page
    from vfmkit.cli.main import build_command

    from .cli_reference import cli_page

    return {"reference/cli.md": cli_page(build_command(), command_page, DOCS_LINE)}


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


def generated_pages() -> dict[str, str]:
    """Every generated page."""
    return {**spec_pages(), **cli_pages(), **tao_pages(), **other_pages()}
