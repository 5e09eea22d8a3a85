"""The guides cannot rot: every `vfm` command shown names real commands, options and spec keys (cheap, static), and
every runnable block runs on generated data with tiny models (one subprocess per page; ``slow`` where long)."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
from docs._gen.runnable import commands, page_blocks
from pydantic import BaseModel
from tests.conftest import REPO_ROOT
from tests.docs.guide_cases import GUIDES, appended, replaced, replaced_text
from tests.reliability.helpers import CliResult, cli_env, run_vfm_batch

from vfmkit.cli.main import build_command
from vfmkit.task import ACTIONS, spec_class
from vfmkit.tasks import ALIASES, task_names

DOCS = REPO_ROOT / "docs"
PAGES = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))


def _resolve(argv: list[str]) -> tuple[tuple[str, ...], typing.Any, list[str]]:
    """The command path, the command and the remaining words of ``vfm argv...``."""
    command, path = build_command(), []
    words = list(argv)
    while words and words[0] in getattr(command, "commands", {}):
        path.append(words.pop(0))
        command = command.commands[path[-1]]
    return tuple(path), command, words


def _option_names(command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if param.param_type_name == "option":
            names.update([*param.opts, *param.secondary_opts])
    return names


def _sections(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _sections(arg)]


def has_key(schema: type[BaseModel], dotted: str) -> bool:
    """Whether ``dotted`` names a key of the spec ``schema`` (list items by index, any key below a mapping)."""
    parts = [part for part in dotted.split(".") if not part.isdigit()]
    field = schema.model_fields.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    sections = _sections(field.annotation)
    if not sections:
        return typing.get_origin(field.annotation) is dict
    return any(has_key(section, ".".join(parts[1:])) for section in sections)


def check_command(argv: list[str], keys: bool = True) -> list[str]:
    """What is wrong with the command ``vfm argv...``: an unknown command, option or (``keys``) spec key."""
    path, command, words = _resolve(argv)
    problems = []
    if getattr(command, "commands", None) and not getattr(command, "invoke_without_command", False):
        problems.append(f"`vfm {' '.join(path)}` needs a sub-command")
    options = _option_names(command)
    for word in words:
        if word.startswith("-") and not word.lstrip("-")[:1].isdigit() and word.split("=")[0] not in options:
            problems.append(f"unknown option {word} of `vfm {' '.join(path)}`")
    task = ALIASES.get(path[0], path[0]) if path else None
    is_task_verb = task in task_names() and len(path) == 2 and path[1] in ACTIONS
    if is_task_verb and keys:
        schema = spec_class(task)
        for word in words:
            key, sep, _ = word.partition("=")
            if sep and not word.startswith("-") and not has_key(schema, key):
                problems.append(f"`{key}` is not a key of the {task} spec")
    return problems


@pytest.mark.parametrize("page", PAGES)
def test_every_command_shown_names_real_commands_options_and_keys(page: str) -> None:
    problems = []
    for block in page_blocks(DOCS / page):
        if block.lang != "bash":
            assert not block.runnable or block.title, (
                f"{page}:{block.line}: a runnable {block.lang} block needs a title"
            )
            continue
        for argv in commands(block, skip_others=not block.runnable):
            found = check_command(argv, keys=block.exit_code == 0)  # a command shown failing may name a wrong key
            problems += [f"{page}:{block.line}: vfm {' '.join(argv)}: {p}" for p in found]
    assert not problems, "\n".join(problems)


def test_every_command_in_the_readme_names_real_commands_options_and_keys() -> None:
    problems = []
    for block in page_blocks(REPO_ROOT / "README.md"):
        for argv in commands(block, skip_others=True) if block.lang == "bash" else []:
            problems += [f"README.md:{block.line}: vfm {' '.join(argv)}: {p}" for p in check_command(argv)]
    assert not problems, "\n".join(problems)


def test_every_page_with_runnable_blocks_has_a_case() -> None:
    runnable = {page for page in PAGES if any(block.runnable for block in page_blocks(DOCS / page))}
    assert runnable == set(GUIDES), "add a GuideCase in tests/docs/guide_cases.py (or drop a stale one)"


def test_the_static_check_catches_what_it_should() -> None:
    assert check_command(["classify", "train", "-c", "x.yaml", "train.epochs=3"]) == []
    assert check_command(["classify", "train", "train.epoch=3"]) == ["`train.epoch` is not a key of the classify spec"]
    assert check_command(["embed", "photos/", "--modle", "x"]) == ["unknown option --modle of `vfm embed`"]
    assert check_command(["classify"]) == ["`vfm classify` needs a sub-command"]
    assert check_command(["detect", "train", "dataset.train_data_sources.0.image_dir=x"]) == []


def _run_alone(argv: list[str], work: Path) -> CliResult:
    command = [sys.executable, "-m", "vfmkit.cli.main", *argv]
    done = subprocess.run(command, env=cli_env(), cwd=work, capture_output=True, text=True, timeout=1200, check=False)
    return CliResult(argv, done.returncode, done.stdout, done.stderr)


def _run_page(page: str, work: Path) -> None:
    case = GUIDES[page]
    case.setup(work)
    runs = []
    for block in page_blocks(DOCS / page):
        if not block.runnable:
            continue
        if block.lang != "bash":
            (work / block.title).write_text(replaced_text(case, block.text))
            continue
        for argv in commands(block):
            words = [replaced(case, word) for word in argv]
            runs.append((block, [*words, *appended(case, words)]))
    assert runs, f"{page} has no runnable commands"
    if case.own_processes:
        results = [_run_alone(argv, work) for _, argv in runs]
    else:
        results = run_vfm_batch([argv for _, argv in runs], work / ".vfm-batch", cwd=work, timeout=1200)
    for (block, _), result in zip(runs, results, strict=True):
        assert result.code == block.exit_code, (
            f"{page}:{block.line}: vfm {' '.join(result.argv)} exited {result.code} (expected {block.exit_code})\n"
            f"{result.out}\n{result.err}"
        )


@pytest.mark.parametrize(
    "page", [pytest.param(page, marks=[pytest.mark.slow] if case.slow else []) for page, case in GUIDES.items()]
)
def test_the_runnable_commands_of_a_guide_run(page: str, tmp_path: Path) -> None:
    _run_page(page, tmp_path)
