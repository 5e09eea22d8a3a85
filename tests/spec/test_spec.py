"""Spec resolution: defaults <- file <- overrides, errors with dotted paths and suggestions, paths, templates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vfmkit.spec.loader import SpecError, load_spec, parse_overrides
from vfmkit.spec.render import render_spec_template
from vfmkit.tasks.classify.spec import ClassifySpec


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_merge_order_defaults_file_overrides(tmp_path):
    spec_file = _write(tmp_path / "spec.yaml", {"dataset": {"root": "data"}, "train": {"epochs": 7, "batch_size": 8}})
    spec = load_spec(ClassifySpec, spec_file, ["train.epochs=3", "train.optimizer.type=sgd"])
    assert spec.train.epochs == 3  # override beats file
    assert spec.train.batch_size == 8  # file beats default
    assert spec.train.optimizer.type == "sgd"
    assert spec.train.optimizer.lr == 1e-3  # default


def test_relative_paths_resolve_against_the_spec_folder(tmp_path, monkeypatch):
    sub = tmp_path / "specs"
    sub.mkdir()
    spec_file = _write(sub / "spec.yaml", {"dataset": {"root": "../data"}, "results_dir": "out"})
    monkeypatch.chdir(tmp_path / "specs")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(ClassifySpec, spec_file, ["train.resume=runs/x"])
    assert spec.dataset.root == (tmp_path / "data").resolve()
    assert spec.results_dir == (sub / "out").resolve()
    assert spec.train.resume == (elsewhere / "runs/x").resolve()  # overrides are typed in the shell: cwd


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epoch=3"], r"unknown key 'train.epoch'; did you mean 'train.epochs'\?"),
        (["epochs=3"], r"unknown key 'epochs'; did you mean 'train.epochs'\?"),
        (["train.optimizer.lrr=0.1"], r"did you mean 'train.optimizer.lr'\?"),
        (["train.epochs=abc"], r"'train.epochs': Input should be a valid integer"),
        (["train.epochs=0"], r"'train.epochs': Input should be greater than or equal to 1"),
        (["model.mode=finetuned"], r"'model.mode': Input should be 'linear_probe', 'finetune' or 'partial'"),
        (["train.epochs"], r"expected dotted.key=value"),
        (["model={backbone:x}"], r"'model.backbone:x' is read as one key .*write `backbone: x` with a space after"),
    ],
)
def test_bad_overrides_name_the_key(tmp_path, overrides, message):
    spec_file = _write(tmp_path / "spec.yaml", {"dataset": {"root": "data"}})
    with pytest.raises(SpecError, match=message):
        load_spec(ClassifySpec, spec_file, overrides)


def test_file_errors_name_the_file(tmp_path):
    spec_file = _write(tmp_path / "spec.yaml", {"dataset": {"root": "data", "fromat": "csv"}})
    with pytest.raises(SpecError, match=r"spec.yaml: unknown key 'dataset.fromat'; did you mean 'dataset.format'"):
        load_spec(ClassifySpec, spec_file)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  backbone: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml: line \d+, column \d+ is not valid YAML"):
        load_spec(ClassifySpec, broken)
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(ClassifySpec, tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(ClassifySpec, listed)


def test_required_dataset_fields():
    with pytest.raises(SpecError, match="'dataset' is required"):
        load_spec(ClassifySpec, None, [])
    with pytest.raises(SpecError, match="dataset.train_csv is required for format 'csv'"):
        load_spec(ClassifySpec, None, ["dataset.format=csv"])


def test_override_values_are_yaml_typed():
    assert parse_overrides(["a.b=3", "a.c=true", "d=[1, 2]", "e=x y", "f="]) == {
        "a": {"b": 3, "c": True},
        "d": [1, 2],
        "e": "x y",
        "f": None,
    }


def test_template_is_commented_and_valid(tmp_path):
    text = render_spec_template(ClassifySpec, "classify", {"dataset": {"root": "data"}})
    assert "# layer-wise lr decay for ViT blocks" in text
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    spec = load_spec(ClassifySpec, path)
    defaults = ClassifySpec(dataset={"root": tmp_path / "data"}, results_dir=tmp_path / "runs")
    assert spec.model_dump() == defaults.model_dump()


def test_paths_inside_lists_of_sections_resolve_against_the_spec_file(tmp_path, monkeypatch) -> None:
    from pydantic import Field

    from vfmkit.spec.base import RunSpec, Section, SpecPath

    class Source(Section):
        image_dir: SpecPath

    class ListSpec(RunSpec):
        sources: list[Source] = Field(default_factory=list)

    (tmp_path / "spec.yaml").write_text("sources:\n  - image_dir: images\n  - image_dir: /abs/images\n")
    monkeypatch.chdir(tmp_path.parent)
    spec = load_spec(ListSpec, tmp_path / "spec.yaml", [])
    assert [s.image_dir for s in spec.sources] == [(tmp_path / "images").resolve(), Path("/abs/images")]
    spec = load_spec(ListSpec, None, ["sources=[{image_dir: rel}]"])
    assert spec.sources[0].image_dir == (tmp_path.parent / "rel").resolve()  # overrides: against the cwd


def test_precision_32_given_as_a_number_is_the_string() -> None:
    from vfmkit.spec.base import TrainSpec

    assert TrainSpec.model_validate({"precision": 32}).precision == "32"
    with pytest.raises(ValueError, match="bf16-mixed"):
        TrainSpec.model_validate({"precision": 16})
