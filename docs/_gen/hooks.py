"""mkdocs hook (``hooks:`` in mkdocs.yml): adds the generated reference pages to the site while it builds.

Nothing generated is written into ``docs/``: the pages exist only in the build (see :mod:`_gen.pages`).
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parents[1]
SOURCE_COMMENT = re.compile(r"^<!--.*?-->[ \t]*\n", re.MULTILINE | re.DOTALL)
"""An HTML comment on lines of its own: a runnable marker or a note for the maintainers, kept out of the site."""


def _pages_module():
    if str(DOCS_DIR) not in sys.path:
        sys.path.insert(0, str(DOCS_DIR))
    return importlib.import_module("_gen.pages")


def on_files(files, config):
    """Add every generated page (mkdocs calls this before it builds the navigation)."""
    from mkdocs.structure.files import File

    for path, content in _pages_module().generated_pages().items():
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    """Drop the source comments (runnable markers, ``TODO(lead)`` notes) before the page is rendered."""
    return SOURCE_COMMENT.sub("", markdown)
