"""Issue 16's "Also found" list and the audit's message cases (N10, N13, N14, N18, N19), through the CLI where users
meet them, on generated data."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import BaseModel

from vfmkit.cli.main import main
from vfmkit.spec.loader import load_spec
from vfmkit.tasks import get_task, task_names


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``vfm argv`` in this process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- `vfm spec init` shows every key -------------------------------------------------------------------------------


def _schema_leaves(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every leaf key of a spec schema, dotted, list items as ``key[]`` (sections inside ``X | None``, ``list[X]`` and
    ``X | list[X]`` included)."""
    leaves = set()
    for name, field in model.model_fields.items():
        nested = _nested_sections(field.annotation)
        if not nested:
            leaves.add(prefix + name)
        for section, is_list in nested:
            leaves |= _schema_leaves(section, f"{prefix}{name}{'[]' if is_list else ''}.")
    return leaves


def _nested_sections(annotation, in_list: bool = False) -> list[tuple[type[BaseModel], bool]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, in_list)]
    is_list = typing.get_origin(annotation) is list
    return [found for arg in typing.get_args(annotation) for found in _nested_sections(arg, in_list or is_list)]


def _uncomment_blocks(text: str) -> str:
    """The template with every commented-out section (``name: null`` then ``# name:`` and its ``#   ...`` lines)
    written in place of its ``null``, repeated until none is left: what a user gets by uncommenting them."""
    lines = text.splitlines()
    while True:
        for index in range(len(lines) - 1):
            null = re.fullmatch(r"(\s*)([A-Za-z_]\w*): null", lines[index])
            if null and lines[index + 1] == f"{null[1]}# {null[2]}:":
                pad, end = null[1], index + 2
                while end < len(lines) and lines[end].startswith(f"{pad}#   "):
                    end += 1
                block = [f"{pad}{line[len(pad) + 2 :]}" for line in lines[index + 1 : end]]
                lines[index:end] = block
                break
        else:
            return "\n".join(lines)


def _yaml_paths(value, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        paths = set()
        for key, inner in value.items():
            paths |= {prefix + str(key)} | _yaml_paths(inner, f"{prefix}{key}.")
        return paths
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return {path for item in value for path in _yaml_paths(item, prefix.removesuffix(".") + "[].")}
    return set()


@pytest.mark.parametrize("task", task_names())
def test_spec_init_shows_every_key(task, tmp_path, capsys):
    """Every leaf key of the task's spec schema is in `vfm spec init <task>` (sections left at null as commented
    blocks), and the template as written loads."""
    path = tmp_path / f"{task}.yaml"
    code, _, err = _cli(["spec", "init", task, "-o", path], capsys)
    assert code == 0, err
    text = path.read_text()
    schema = get_task(task).spec_class
    load_spec(schema, path)
    written = _yaml_paths(yaml.safe_load(_uncomment_blocks(text)))
    missing = sorted(_schema_leaves(schema) - written)
    assert not missing, f"spec init {task} hides {missing}"


# --- override typos ------------------------------------------------------------------------------------------------


def test_override_typo_names_every_problem_and_the_missing_space(tmp_path, capsys):
    spec = tmp_path / "distill.yaml"
    assert _cli(["spec", "init", "distill", "-o", spec], capsys)[0] == 0
    override = "distill.teacher=[{backbone:test-radio-v2-tiny,pretrained:false,name:t,input_size:64}]"
    code, _, err = _cli(["spec", "show", "-c", spec, override], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "more problem" not in err
    assert "write `backbone: test-radio-v2-tiny` with a space after the colon" in err
    assert "write `input_size: 64` with a space after the colon" in err
    assert "'distill.teacher.0.backbone' is required" in err
    code, _, err = _cli(["spec", "show", "-c", spec, "train.epochs=0", "train.batch_sizee=2"], capsys)
    assert code == 2 and "'train.epochs'" in err and "unknown key 'train.batch_sizee'" in err, err
    assert err.count("command-line override:") == 1  # one source: named once


# --- N13: k-NN needs two classes -----------------------------------------------------------------------------------


def _colour_images(folder: Path, count: int, colour: tuple[int, int, int], size: int = 32) -> Path:
    """``count`` noisy PNG images of one colour in ``folder``."""
    rng = np.random.default_rng(sum(colour) + count)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = np.clip(np.asarray(colour) + rng.integers(-20, 21, (size, size, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index:03d}.png")
    return folder


def _knn_root(root: Path, classes: dict[str, tuple[int, int, int]]) -> Path:
    for split, count in (("train", 3), ("val", 2)):
        for name, colour in classes.items():
            _colour_images(root / split / name, count, colour)
    return root


DISTILL_SPEC = """task: distill
name: x
model: {backbone: test-radio-v2-tiny, pretrained: false, resolution: 32}
distill:
  teacher: [{backbone: test-radio-v3-tiny, pretrained: false, name: tiny, mode: combo}]
  phi_s: {freeze_after: 2, update_period: 1}
train: {epochs: 1, batch_size: 4, num_workers: 0}
"""


def test_n13_one_class_knn_validation_is_refused(tmp_path, capsys):
    """`vfm knn`, `dataset.knn_validation.root` and `dataset.control.root` with one class: one line naming the
    folder / key, nothing trained (a one-class set scores 100% and would pick the best checkpoint)."""
    one = _knn_root(tmp_path / "one", {"ring": (200, 40, 40)})
    two = _knn_root(tmp_path / "two", {"ring": (200, 40, 40), "cross": (40, 40, 200)})
    unlabeled = _colour_images(tmp_path / "unlabeled", 4, (90, 160, 90))
    spec = tmp_path / "dis.yaml"
    spec.write_text(DISTILL_SPEC + f"results_dir: {tmp_path / 'runs'}\n")
    code, _, err = _cli(
        ["knn", "--train", one / "train", "--val", one / "val", "--model", "test-radio-v2-tiny"], capsys
    )
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert f"k-NN needs at least 2 classes, {one / 'train'} has 1 (ring)" in err
    data = [f"dataset.train_nolabel.folder_path={unlabeled}"]
    for overrides, key in (
        ([f"dataset.knn_validation.root={one}"], "dataset.knn_validation.root"),
        ([f"dataset.knn_validation.root={two}", f"dataset.control.root={one}"], "dataset.control.root"),
    ):
        code, _, err = _cli(["distill", "train", "-c", spec, *data, *overrides], capsys)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert f"{key} {one}" in err and "at least 2 classes" in err and "has 1 (ring)" in err, err
    assert not (tmp_path / "runs").exists()
