"""``vfm spec from-tao``: every TAO task's spec (tests/spec/tao_specs, written from TAO's key names and defaults)
converts and validates, every key of the input is converted or listed with a reason, every table row's example
arrives at its vfmkit key, and ``vfm <task> train`` refuses an unconverted TAO spec naming the command."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import yaml

from vfmkit.cli.main import main
from vfmkit.errors import VfmError
from vfmkit.spec.loader import SpecError, read_yaml
from vfmkit.tao import convert_tao_file
from vfmkit.tao.convert import PLACEHOLDER, Conversion, convert, flatten, resolve_tao_spec
from vfmkit.tao.tables import UNSET, tao_tasks

SPECS = Path(__file__).parent / "tao_specs"
TAO_SPECS = {
    "classification_pyt": "classification_pyt",
    "classification_pyt_distill": "classification_pyt_distill",
    "radio_distill": "radio_distill",
    "rtdetr": "rtdetr",
    "rtdetr_distill": "rtdetr_distill",
    "dino": "dino",
    "segformer": "segformer",
    "visual_changenet_segment": "visual_changenet",
    "visual_changenet_classify": "visual_changenet",
    "oneformer": "oneformer",
    "mask2former": "mask2former",
    "clip": "clip",
}
"""Test spec file stem -> the TAO task it is written for."""
BASE_SPEC = {task: stem for stem, task in reversed(TAO_SPECS.items())}
"""TAO task -> the test spec its rows are checked against."""


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@functools.cache
def _resolved(stem: str) -> dict:
    return resolve_tao_spec(SPECS / f"{stem}.yaml")


def resolved(stem: str) -> dict:
    """A test spec as TAO reads it (a fresh copy of the cached data)."""
    return copy.deepcopy(_resolved(stem))


def fill(conversion: Conversion) -> list[str]:
    """``key=value`` overrides giving every ``???`` a value."""
    return [f"{key}=/data/{key.replace('.', '_')}" for key in conversion.placeholders]


def test_every_tao_task_has_a_test_spec() -> None:
    assert set(TAO_SPECS.values()) == set(tao_tasks())


@pytest.mark.parametrize("stem", TAO_SPECS)
def test_the_task_is_inferred(stem: str) -> None:
    result = convert_tao_file(SPECS / f"{stem}.yaml")
    assert result.conversion.task.name == TAO_SPECS[stem]


@pytest.mark.parametrize("stem", TAO_SPECS)
def test_converts_validates_and_loads_back(stem: str, tmp_path: Path) -> None:
    source = SPECS / f"{stem}.yaml"
    first = convert_tao_file(source, TAO_SPECS[stem])
    assert first.conversion.placeholders, "the test specs leave their data paths as ??? (as TAO's samples do)"
    out = tmp_path / "vfm.yaml"
    result = convert_tao_file(source, TAO_SPECS[stem], fill(first.conversion), out)
    assert result.conversion.placeholders == []
    written = read_yaml(out)
    assert written == result.conversion.data()  # the comments do not change the data
    from vfmkit import Task

    task = Task(result.conversion.task.vfm_task, out)  # the converted spec loads as a vfmkit spec
    assert task.spec.results_dir == Path(written["results_dir"])


@pytest.mark.parametrize("stem", TAO_SPECS)
def test_every_input_key_is_converted_or_listed(stem: str) -> None:
    data = resolved(stem)
    data.setdefault("train", {})["made_up_key"] = 3  # an unknown key is listed too
    conversion = convert(data, TAO_SPECS[stem])
    reported = [s.tao_key for sources in conversion.sources.values() for s in sources]
    reported += [item.tao_key for item in conversion.unmapped]

    def covered(leaf: str) -> bool:
        return any(k == leaf or k.startswith(leaf + ".") or leaf.startswith(k + ".") for k in reported)

    assert [leaf for leaf in flatten(data) if not covered(leaf)] == []
    unknown = [item for item in conversion.unmapped if item.category == "unknown"]
    assert [item.tao_key for item in unknown] == ["train.made_up_key"]


def _row_cases() -> list:
    """(TAO task, row path, row) for every row of every table: the shared rows under classification_pyt, inherited
    rows under the task that defines them, the rows of an ``each`` row with their parent."""
    cases, seen = [], set()
    for name, task in tao_tasks().items():
        rows = task.all_rows if name == "classification_pyt" else task.rows
        for row in rows:
            if id(row) in seen:
                continue
            seen.add(id(row))
            cases.append(pytest.param(name, None, row, id=f"{name}:{row.tao}:{len(cases)}"))
            cases += [pytest.param(name, row, sub, id=f"{name}:{row.tao}.{sub.tao}") for sub in row.rows]
    return cases


def _set(data: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    target = data
    for part in parts[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[parts[-1]] = value


def _delete(data: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.get(part) if isinstance(data, dict) else None
    if isinstance(data, dict):
        data.pop(last, None)


def _first(wanted):
    return wanted[0] if isinstance(wanted, list) else wanted


def _prepare(target: dict, rows: list, row, value) -> None:
    """Make ``row`` the row that applies to ``value``: its ``when`` holds, the ``when`` of the other rows for the same
    key does not, its ``context`` is set, and no other key writes its vfmkit key."""
    for other in rows:
        if other.vfm and other.vfm == row.vfm and other.tao != row.tao and other.tao not in row.when:
            _delete(target, other.tao)
        if other.tao == row.tao and other is not row:
            for key in other.when:
                if key not in row.when and key != row.tao:
                    _set(target, key, "zz-other")
    for key, wanted in {**row.when, **row.context}.items():
        _set(target, key, _first(wanted))
    if not any(key == row.tao or key.startswith(row.tao + ".") for key in row.when):
        _set(target, row.tao, value)


@pytest.mark.parametrize(("name", "parent", "row"), _row_cases())
def test_every_table_row(name: str, parent, row) -> None:
    """A mapped row's example arrives at its vfmkit key as ``expect``; an unmappable key is listed with its reason."""
    if not row.reason and row.example is UNSET:  # a list of sections (its rows are checked) or a folded key
        assert row.transform in ("each", "same_as"), "a mapped row needs an example"
        return
    data = resolved(BASE_SPEC[name])
    rows = tao_tasks()[name].all_rows
    row = row.model_copy(update={"tao": row.tao.replace("*", "zz")})
    value = "some value" if row.reason else row.example
    if parent is None:
        _prepare(data, rows, row, value)
        tao_key, target = row.tao, row.vfm
    else:
        item: dict = {}
        _prepare(item, parent.rows, row, value)
        _set(data, parent.tao, [item])
        tao_key, target = f"{parent.tao}.0.{row.tao}", f"{parent.vfm}.0.{row.vfm}"
    conversion = convert(data, name)
    if row.reason:
        listed = {item.tao_key: item for item in conversion.unmapped}
        assert tao_key in listed and listed[tao_key].category == row.reason
        return
    expect = row.example if row.expect is UNSET else row.expect
    assert conversion.values.get(target, "<missing>") == expect, conversion.unmapped
    assert any(s.tao_key == tao_key and s.value == row.example for s in conversion.sources[target])


@pytest.mark.parametrize("name", list(tao_tasks()))
def test_every_mapped_key_is_a_key_of_the_vfmkit_spec(name: str) -> None:
    from vfmkit.tao.detect import spec_accepts
    from vfmkit.task import spec_class

    task = tao_tasks()[name]
    schema = spec_class(task.vfm_task)

    def plain(dotted: str) -> str:
        return ".".join(part for part in dotted.split(".") if not part.isdigit())

    targets = [row.vfm for row in task.all_rows if row.vfm and not row.rows] + list(task.set) + task.required
    targets += [f"{row.vfm}.{sub.vfm}" for row in task.all_rows for sub in row.rows if sub.vfm]
    assert [t for t in targets if not spec_accepts(schema, plain(t))] == []


def test_the_tables_are_package_data() -> None:
    import fnmatch

    from tests.conftest import REPO_ROOT

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO_ROOT / "src" / "vfmkit"
    tables = [p.relative_to(package).as_posix() for p in package.rglob("tao_map.yaml")]
    assert len(tables) == 8
    assert [t for t in tables if not any(fnmatch.fnmatch(t, p) for p in patterns["vfmkit"])] == []


# --- values and placeholders ----------------------------------------------------------------------------------------


def test_interpolations_are_resolved_and_missing_values_stay_placeholders(tmp_path: Path) -> None:
    spec = tmp_path / "tao.yaml"
    spec.write_text(
        "results_dir: /r\nmodel:\n  backbone:\n    type: radio_v2-l\n    freeze_backbone: true\n  head:\n"
        "    type: TAOLinearClsHead\ndataset:\n  root_dir: ???\n  train_dataset:\n"
        "    images_dir: ${dataset.root_dir}/tr\n"
        "train:\n  num_epochs: 3\n  optim:\n    lr: 1e-4\n  results_dir: ${results_dir}/train\n"
    )
    conversion = convert_tao_file(spec, "classification_pyt").conversion
    assert conversion.values["train.optimizer.lr"] == 1e-4  # a float, as OmegaConf reads it (YAML 1.1: a string)
    assert conversion.values["model.backbone"] == "c-radio-v2-l"
    assert conversion.values["dataset.root"] == PLACEHOLDER
    listed = {item.tao_key: item for item in conversion.unmapped}
    assert listed["train.results_dir"].value == "/r/train"
    assert "follows dataset.root_dir" in listed["dataset.train_dataset.images_dir"].note
    filled = convert_tao_file(spec, "classification_pyt", ["dataset.root=/data/x"]).conversion
    assert filled.placeholders == []
    spec.write_text(spec.read_text().replace("???", "/data/x"))
    assert convert_tao_file(spec, "classification_pyt").conversion.values["dataset.train_split"] == "tr"


def test_an_unknown_backbone_is_listed_and_left_to_fill(tmp_path: Path) -> None:
    spec = tmp_path / "tao.yaml"
    spec.write_text("model:\n  backbone: fan_small_12_p4_hybrid\n  feat_strides: [8, 16, 32]\n")
    conversion = convert_tao_file(spec, "rtdetr").conversion
    assert conversion.values["model.backbone"] == PLACEHOLDER
    listed = {item.tao_key: item for item in conversion.unmapped}
    assert listed["model.backbone"].category == "not-supported-yet"
    assert "`vfm models`" in listed["model.backbone"].note
    assert convert_tao_file(spec, "rtdetr", ["model.backbone=c-radio-v3-b"]).conversion.placeholders == [
        "dataset.train_data_sources"
    ]


def test_an_enum_value_without_equivalent_is_listed(tmp_path: Path) -> None:
    spec = tmp_path / "tao.yaml"
    spec.write_text("model:\n  feat_strides: [8]\ntrain:\n  optim:\n    optimizer: Lamb\n    lr_scheduler: COSINE\n")
    sources = "dataset.train_data_sources=[{image_dir: a, json_file: b.json}]"
    conversion = convert_tao_file(spec, "rtdetr", ["model.backbone=x", sources]).conversion
    assert conversion.values["train.scheduler.type"] == "cosine"  # case-insensitive
    listed = {item.tao_key: item for item in conversion.unmapped}
    assert listed["train.optim.optimizer"].category == "not-supported-yet"
    assert "'Lamb'" in listed["train.optim.optimizer"].note


# --- the command ----------------------------------------------------------------------------------------------------


def test_the_command_writes_a_commented_spec(capsys, tmp_path: Path) -> None:
    out = tmp_path / "vfm.yaml"
    code, stdout, _ = run_cli(capsys, "spec", "from-tao", SPECS / "rtdetr.yaml", "-o", out)
    assert code == 0 and f"wrote {out}" in stdout and "fill in" in stdout
    text = out.read_text()
    assert "backbone: timm:resnet50  # TAO model.backbone: resnet_50" in text
    assert "backbone_lr_scale: 0.1  # TAO train.optim.lr_backbone: 1.0e-05" in text
    assert "#   GPU-only" in text and "#       train.gpu_ids: [0]" in text
    header = text.split("\n\n")[0]
    assert "#   dataset.train_data_sources.0.image_dir" in header  # the keys to fill in
    code, _, err = run_cli(capsys, "spec", "from-tao", SPECS / "rtdetr.yaml", "-o", out)
    assert "exists; pass --force" in one_line_error(code, err)
    assert run_cli(capsys, "spec", "from-tao", SPECS / "rtdetr.yaml", "-o", out, "--force")[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "yolo_v4"], "unknown TAO task 'yolo_v4'; vfm spec from-tao converts: "),
        (["train.epochs=0"], "command-line override: 'train.epochs': Input should be greater than or equal to 1"),
        (["train.epoch=3"], "unknown key 'train.epoch'; did you mean 'train.epochs'?"),
        (["model.mode=finetuned"], "'model.mode': Input should be 'linear_probe', 'finetune' or 'partial'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path: Path, args, message) -> None:
    out = tmp_path / "vfm.yaml"
    code, _, err = run_cli(capsys, "spec", "from-tao", SPECS / "classification_pyt.yaml", "-o", out, *args)
    assert message in one_line_error(code, err)
    assert not out.exists()


def test_a_value_of_the_tao_spec_that_does_not_validate_names_its_tao_key(capsys, tmp_path: Path) -> None:
    spec = tmp_path / "tao.yaml"
    spec.write_text(yaml.safe_dump({"model": {"head": {"topk": [1, 0]}}, "dataset": {"root_dir": "/d"}}))
    code, _, err = run_cli(capsys, "spec", "from-tao", spec, "--task", "classification_pyt")
    line = one_line_error(code, err)
    assert "(TAO model.head.topk): 'top_k': Input should be greater than or equal to 1" in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: ${nope.x}\n", "'a': interpolation cannot be resolved"),
        ("a: [1, 2\n", "not valid YAML"),
        ("a: 1\na: 2\n", "not valid YAML"),
        ("- 1\n", "the top level must be a mapping"),
        ("results_dir: /r\n", "cannot tell which TAO task"),
        ("a: \udcff\n", "not a UTF-8 text file"),
    ],
)
def test_unreadable_tao_specs(tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "tao.yaml"
    spec.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(VfmError, match=message.replace("[", r"\[").replace("$", r"\$")):
        convert_tao_file(spec)


def test_an_ambiguous_spec_asks_for_the_task(tmp_path: Path) -> None:
    spec = tmp_path / "tao.yaml"
    spec.write_text("model:\n  feat_strides: [8]\n  two_stage_type: standard\n")
    with pytest.raises(VfmError, match="could be a TAO spec of rtdetr, dino: pass --task"):
        convert_tao_file(spec)


# --- unconverted TAO specs given to vfm <task> ----------------------------------------------------------------------


@pytest.mark.parametrize("stem", TAO_SPECS)
def test_train_on_a_tao_spec_says_which_command_converts_it(capsys, stem: str) -> None:
    task = tao_tasks()[TAO_SPECS[stem]]
    path = SPECS / f"{stem}.yaml"
    code, _, err = run_cli(capsys, task.vfm_task, "train", "-c", path)
    line = one_line_error(code, err)
    assert f"{path} looks like a TAO spec (" in line
    assert f"`vfm spec from-tao {path} --task {task.name} -o vfm_spec.yaml`" in line


def test_spec_show_without_a_task_says_the_same(capsys) -> None:
    code, _, err = run_cli(capsys, "spec", "show", "-c", SPECS / "segformer.yaml")
    assert "looks like a TAO spec" in one_line_error(code, err)
    assert "--task segformer" in err


def test_a_converted_spec_with_placeholders_names_the_key_to_fill(capsys, tmp_path: Path) -> None:
    out = tmp_path / "vfm.yaml"
    assert run_cli(capsys, "spec", "from-tao", SPECS / "classification_pyt.yaml", "-o", out)[0] == 0
    code, _, err = run_cli(capsys, "classify", "train", "-c", out)
    assert f"{out}: 'dataset.root' is ??? (a value to fill in)" in one_line_error(code, err)
    with pytest.raises(SpecError, match=r"'dataset.root' is \?\?\?"):
        from vfmkit import Task

        Task("classify", {"dataset": {"root": "???"}})


def test_a_vfmkit_spec_with_a_tao_key_is_not_mistaken_for_tao(tmp_path: Path) -> None:
    """Only keys the task's spec does not accept count: detect's own dataset.train_data_sources is no TAO sign."""
    from vfmkit import Task

    spec = tmp_path / "det.yaml"
    spec.write_text("dataset:\n  train_data_sources: [{image_dir: a, json_file: b.json}]\n")
    assert Task("detect", spec).spec.dataset.train_data_sources[0].json_file.name == "b.json"


def test_one_tao_like_key_in_a_vfmkit_spec_gets_the_normal_error(capsys, tmp_path: Path) -> None:
    """A single such key is more likely a typo: the validation error names it and the closest vfmkit key."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset:\n  root: data\ntrain:\n  num_epochs: 3\n")
    code, _, err = run_cli(capsys, "classify", "train", "-c", spec)
    line = one_line_error(code, err)
    assert "unknown key 'train.num_epochs'" in line and "TAO" not in line
    spec.write_text("dataset:\n  root: data\ntrain:\n  num_epochs: 3\n  num_gpus: 2\n")
    assert "looks like a TAO spec (train.num_epochs, train.num_gpus)" in one_line_error(
        *run_cli(capsys, "classify", "train", "-c", spec)[::2]
    )
