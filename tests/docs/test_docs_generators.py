"""The generated reference pages' building blocks: escaping, spec key rows, CLI rows and the TAO mapping rows
(rendered from stand-ins of ``vfmkit.tao.tables`` rows, so they run without the converter)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Literal

from docs._gen.markdown import text
from docs._gen.pages import benchmarks_page
from docs._gen.runnable import blocks, commands
from docs._gen.spec_reference import key_rows, type_text
from docs._gen.tao_reference import row_cells, tao_page
from pydantic import BaseModel, Field
from tests.conftest import REPO_ROOT


def test_text_escapes_html_and_table_pipes_outside_code_only() -> None:
    assert text("runs go to <results_dir>/<task> | a * b") == r"runs go to &lt;results_dir&gt;/&lt;task&gt; \| a \* b"
    assert text("see `vfm <task> --help`") == "see `vfm <task> --help`"


class _Item(BaseModel):
    path: Path = Field(description="a file")


class _Section(BaseModel):
    mode: Literal["a", "b"] = Field("a", description="which")
    rate: float = Field(0.1, ge=0, lt=1, description="how much")
    items: list[_Item] | None = Field(None, description="the items")


class _Spec(BaseModel):
    section: _Section = Field(default_factory=_Section, description="a section")


def test_spec_rows_walk_sections_and_list_items_with_types_bounds_and_defaults() -> None:
    rows = key_rows(_Spec)
    assert [row[0] for row in rows] == [
        "`section`{ #section }",
        "`section.mode`{ #section.mode }",
        "`section.rate`{ #section.rate }",
        "`section.items`{ #section.items }",
        "`section.items[].path`{ #section.items.path }",
    ]
    assert rows[1][1:] == [r"`a` \| `b`", "`a`", "which"]
    assert rows[2][1:3] == ["float, ≥ 0, < 1", "`0.1`"]
    assert rows[3][1] == r"list[section] \| null"
    assert rows[4][1:3] == ["path", "*required*"]
    assert type_text(dict[str, int]) == "dict[str, int]"


def _row(tao, vfm=None, **extra):
    fields = dict(
        transform="rename", values={}, keep=[], fold=[], of=None, factor=1, index=0, only_one=False,
        namespace="backbone", rows=[], when={}, reason=None, note="", example=object(), expect=object(),
    )  # fmt: skip
    return SimpleNamespace(tao=tao, vfm=vfm, **{**fields, **extra})


def test_tao_rows_show_mapping_reason_example_and_list_items() -> None:
    mapped = _row("train.num_epochs", "train.epochs", example=12)
    assert row_cells(mapped) == [["`train.num_epochs`", "`train.epochs`", "same value", "`12`", ""]]
    enum = _row("model.backbone.freeze_backbone", "model.mode", transform="enum", values={True: "linear_probe"},
                example=True, expect="linear_probe")  # fmt: skip
    assert row_cells(enum)[0][2:4] == ["enum: `true` → `linear_probe`", "`true` → `linear_probe`"]
    unmapped = _row("train.cudnn.benchmark", reason="gpu-only", note="left to <Lightning>")
    assert row_cells(unmapped) == [
        ["`train.cudnn.benchmark`", "not converted: GPU only", "", "", "left to &lt;Lightning&gt;"]
    ]
    each = _row(
        "dataset.sources", "dataset.train_data_sources", transform="each", rows=[_row("image_dir", "image_dir")]
    )
    assert [cells[:2] for cells in row_cells(each)][1] == [
        "`dataset.sources[].image_dir`",
        "`dataset.train_data_sources[].image_dir`",
    ]


def test_the_tao_page_groups_tao_tasks_under_their_vfmkit_task() -> None:
    task = SimpleNamespace(name="rtdetr", vfm_task="detect", title="RT-DETR", aliases=["rt"], extends=None,
                           set={"model.head": "rtdetr"}, required=["dataset.train_data_sources"],
                           rows=[_row("train.num_epochs", "train.epochs")])  # fmt: skip
    page = tao_page([_row("results_dir", "results_dir")], [task], ["classify", "detect"])
    assert "## vfmkit `detect`" in page and "### rtdetr { #rtdetr }" in page and "## vfmkit `classify`" not in page
    assert "`--task`: `rtdetr`, `rt`." in page and "Sets `model.head`: `rtdetr`." in page


def test_runnable_blocks_and_their_commands() -> None:
    page = "\n".join(
        [
            "<!-- runnable -->",
            '```yaml title="a.yaml"',
            "task: classify",
            "```",
            "```bash",
            "vfm models   # shown only",
            "```",
            "<!-- runnable exit=2 -->",
            "```bash",
            "vfm classify train -c a.yaml \\",
            "    train.epochs=3   # a comment",
            "```",
        ]
    )
    found = blocks(page)
    assert [(b.lang, b.title, b.runnable, b.exit_code) for b in found] == [
        ("yaml", "a.yaml", True, 0),
        ("bash", None, False, 0),
        ("bash", None, True, 2),
    ]
    assert commands(found[2]) == [["classify", "train", "-c", "a.yaml", "train.epochs=3"]]
    bad = blocks("<!-- runnable -->\n```bash\npip install vfmkit\n```\n")[0]
    try:
        commands(bad)
    except ValueError as err:
        assert "only vfm commands" in str(err)
    else:
        raise AssertionError("a non-vfm command in a runnable block must be refused")
    assert commands(bad, skip_others=True) == []


def test_the_benchmarks_page_is_benchmarks_md_as_it_is() -> None:
    source = (REPO_ROOT / "BENCHMARKS.md").read_text().splitlines()
    page = benchmarks_page()["benchmarks.md"].splitlines()
    assert page[0] == source[0] == "# Benchmarks"
    assert "BENCHMARKS.md" in page[2] and page[3:] == source[1:]  # one note line, then every line unchanged
