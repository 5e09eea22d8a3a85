"""`vfm --help` says what vfmkit is, and every command's help ends with the link to its page of the site (the site
test checks that each linked page is built)."""

from __future__ import annotations

import pytest

from vfmkit.cli.docs_links import DOCS_LINE, DOCS_URL, command_page, page_url
from vfmkit.cli.main import build_command, main


def _commands(command, path=()):
    yield path, command
    for name, child in getattr(command, "commands", {}).items():
        yield from _commands(child, (*path, name))


def test_every_command_help_ends_with_the_link_to_its_page() -> None:
    root = build_command()
    seen = 0
    for path, command in _commands(root):
        last = command.help.strip().splitlines()[-1]
        assert last == f"{DOCS_LINE}{page_url(command_page(path))}", (path, command.help)
        seen += 1
    assert seen > 30  # every group and sub-command, hidden aliases included
    assert page_url(command_page(("classify", "train"))) == f"{DOCS_URL}tasks/classify/"
    assert page_url(command_page(())) == DOCS_URL
    assert page_url(command_page(("models", "export"))) == f"{DOCS_URL}guides/fast-inference/"


def test_building_twice_adds_the_link_once() -> None:
    build_command()
    help_text = build_command().commands["embed"].help
    assert help_text.count(DOCS_LINE) == 1


def test_the_app_says_what_vfmkit_is_and_help_shows_the_link(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for word in ("classify", "segment", "change", "detect", "universal", "clip", "distill", "ONNX", "TensorRT"):
        assert word in out
    assert DOCS_URL in out
    with pytest.raises(SystemExit):
        main(["detect", "train", "--help"])
    assert f"{DOCS_URL}tasks/detect/" in capsys.readouterr().out
