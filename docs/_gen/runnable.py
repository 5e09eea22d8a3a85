"""The guides' runnable blocks: what the tests extract and run, so the commands shown cannot rot.

A fenced block preceded by the comment ``<!-- runnable -->`` (or ``<!-- runnable exit=2 -->`` for a command that
must fail with that exit code) is runnable:

- a ``bash`` block: every command in it (``vfm ...`` only; ``#`` comments and ``\\`` line continuations allowed)
  runs, in order, in the page's work folder;
- a block with ``title="<file>"`` (e.g. a YAML spec): its text is written to that file in the work folder first.

Other blocks are shown only (commands needing weights, a GPU or the network).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

MARKER = re.compile(r"^<!--\s*runnable(?:\s+exit=(?P<exit>\d+))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<attrs>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')


@dataclass(frozen=True)
class Block:
    """One fenced block of a page.

    Attributes:
        lang: the info string's language (``bash``, ``yaml``, ``text`` ...).
        title: the ``title="..."`` attribute, or None.
        text: the block's content.
        line: the 1-based line of the opening fence.
        runnable: marked runnable.
        exit_code: the exit code its commands must end with (0 unless marked ``exit=N``).
    """

    lang: str
    title: str | None
    text: str
    line: int
    runnable: bool
    exit_code: int = 0


def blocks(markdown: str) -> list[Block]:
    """Every fenced block of a Markdown page, in order."""
    found, lines, index = [], markdown.splitlines(), 0
    while index < len(lines):
        match = FENCE.match(lines[index].strip())
        if not match:
            index += 1
            continue
        previous = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        marker = MARKER.match(previous)
        fence, start = match["fence"], index
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == fence), len(lines))
        title = TITLE.search(match["attrs"])
        found.append(
            Block(
                lang=match["lang"],
                title=title["title"] if title else None,
                text="\n".join(lines[start + 1 : end]) + "\n",
                line=start + 1,
                runnable=marker is not None,
                exit_code=int(marker["exit"] or 0) if marker else 0,
            )
        )
        index = end + 1
    return found


def commands(block: Block, skip_others: bool = False) -> list[list[str]]:
    """The ``vfm`` commands of a ``bash`` block as argument lists after ``vfm`` (comments dropped, continuation lines
    joined); ``skip_others``: leave out other commands (``pip install ...``) instead of refusing them.

    Raises:
        ValueError: a command that is not ``vfm ...`` (unless skipped), or text shlex cannot split (with the line).
    """
    joined = re.sub(r"\\\n", " ", block.text)
    found = []
    for offset, line in enumerate(joined.splitlines()):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise ValueError(f"line {block.line + 1 + offset}: {err}") from None
        if not words or (skip_others and words[0] != "vfm"):
            continue
        if words[0] != "vfm":
            raise ValueError(f"line {block.line + 1 + offset}: a runnable block holds only vfm commands: {line!r}")
        found.append(words[1:])
    return found


def page_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a page file."""
    return blocks(Path(path).read_text())
