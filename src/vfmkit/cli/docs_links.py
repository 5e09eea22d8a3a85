"""Where each ``vfm`` command is documented: one base URL, the page of every command, and the link that ends its
``--help``.

The site is built from ``docs/`` by mkdocs; its test checks that every page named here exists in the built site.
"""

from __future__ import annotations

from typing import Any

DOCS_URL = "https://vfmkit.github.io/vfmkit/"
"""The documentation site (GitHub Pages); ``site_url`` in mkdocs.yml is the same."""

COMMAND_PAGES: dict[tuple[str, ...], str] = {
    (): "index.md",
    ("demo",): "getting-started.md",
    ("spec",): "reference/spec/index.md",
    ("spec", "from-tao"): "guides/tao.md",
    ("models",): "reference/models.md",
    ("models", "export"): "guides/fast-inference.md",
    ("embed",): "guides/embedding.md",
    ("pca",): "guides/embedding.md",
    ("knn",): "guides/embedding.md",
    ("index",): "guides/embedding.md",
    ("search",): "guides/embedding.md",
    ("dedup",): "guides/embedding.md",
    ("serve",): "guides/embedding.md",
    ("classify",): "tasks/classify.md",
    ("segment",): "tasks/segment.md",
    ("change",): "tasks/change.md",
    ("detect",): "tasks/detect.md",
    ("universal",): "tasks/universal.md",
    ("oneformer",): "tasks/universal.md",
    ("clip",): "tasks/clip.md",
    ("distill",): "tasks/distill.md",
}
"""Command path (after ``vfm``) -> its page in ``docs/``; a command not listed takes its closest listed parent's page
(``vfm classify train`` -> ``tasks/classify.md``)."""


def command_page(path: tuple[str, ...]) -> str:
    """The ``docs/`` page (``tasks/classify.md``) documenting the command ``vfm <path...>``."""
    for end in range(len(path), -1, -1):
        if path[:end] in COMMAND_PAGES:
            return COMMAND_PAGES[path[:end]]
    raise AssertionError("COMMAND_PAGES has the root")  # () is always listed


def page_url(page: str) -> str:
    """The site URL of a ``docs/`` page: ``tasks/classify.md`` -> ``<DOCS_URL>tasks/classify/``."""
    stem = page.removesuffix(".md")
    if stem == "index" or stem.endswith("/index"):
        stem = stem.removesuffix("index")
    else:
        stem += "/"
    return DOCS_URL + stem


DOCS_LINE = "Docs: "
"""The start of the last line of every command's help."""


def add_doc_links(command: Any, path: tuple[str, ...] = ()) -> None:
    """End the help of ``command`` (a click command, as typer builds it) and of every command below it with
    ``Docs: <url of its page>``."""
    link = f"{DOCS_LINE}{page_url(command_page(path))}"
    if command.help is not None and link not in command.help:
        command.help = f"{command.help.rstrip()}\n\n{link}"
    elif command.help is None:
        command.help = link
    for name, child in getattr(command, "commands", {}).items():  # a group's sub-commands
        add_doc_links(child, (*path, name))
