"""The task contract: every registered task (and variant) trains, evaluates, predicts, exports, resumes and reloads
the same way, on generated data and a tiny backbone, through the one engine (as timm's tests run over its models).

The main run of each case uses a frozen backbone with a named local source (a tiny RADIO ``.pth.tar``), so the
frozen-backbone rule (backbone left out of checkpoints, rebuilt from the source and checked by its fingerprint) is on
the path of every verb.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json

import lightning.pytorch as pl
import pytest
import torch
from tests.synthetic import save_tiny_radio_checkpoint
from tests.tasks.contract_cases import CASES, COMMON, ContractCase

from vfmkit import Task
from vfmkit.cli.main import main
from vfmkit.engine.frozen import CHECKPOINT_KEY
from vfmkit.engine.trained import load_trained
from vfmkit.errors import WeightsError
from vfmkit.models import registry
from vfmkit.tasks import get_task, task_names
from vfmkit.weights.safe_load import load_pickle_checkpoint

RUN_FILES = (
    "spec.resolved.yaml",
    "env.json",
    "metrics.csv",
    "plots/loss.png",
    "plots/metrics.png",
    "checkpoints/best.ckpt",
    "checkpoints/last.ckpt",
    "MODEL_CARD.md",
    "evaluate/val/metrics.json",
    "weights.json",
)


def registered_variants() -> list[tuple[str, str | None]]:
    """(task, variant) of every registered task definition."""
    found = []
    for name in task_names():
        family = get_task(name)
        variants = getattr(family, "variants", None)
        found += [(name, variant) for variant in variants] if variants else [(name, None)]
    return found


def test_every_registered_task_has_a_contract_case() -> None:
    assert set(registered_variants()) == {(case.task, case.variant) for case in CASES.values()}


@dataclasses.dataclass
class Setup:
    case: ContractCase
    tmp: object
    source: object  # the frozen backbone's local checkpoint
    args: list[str]

    def task(self, results, *more: str) -> Task:
        return Task(self.case.task, None, [*self.args, f"results_dir={results}", *more])


@pytest.fixture(scope="module", params=list(CASES), ids=lambda key: "-".join(k for k in key if k))
def setup(request, tmp_path_factory) -> Setup:
    case = CASES[request.param]
    tmp = tmp_path_factory.mktemp(case.task)
    source = save_tiny_radio_checkpoint(tmp / "weights" / "tiny-radio.pth.tar")
    args = [*case.data(tmp / "data"), f"{case.backbone_key}={source}", *case.frozen, *COMMON, *case.extra]
    return Setup(case, tmp, source, args)


@pytest.fixture(scope="module")
def main_run(setup):
    return setup.task(setup.tmp / "runs").train()


def _state(path) -> dict[str, torch.Tensor]:
    return load_pickle_checkpoint(path)["state_dict"]


def test_train_writes_the_run_folder(setup, main_run) -> None:
    for name in RUN_FILES:
        assert (main_run.run_dir / name).is_file(), name
    rows = list(csv.DictReader((main_run.run_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and main_run.monitor in rows[0]
    value = rows[-1][main_run.monitor]
    assert value == "" or 0.0 <= float(value) <= 1.0, "metrics are fractions in [0, 1]"
    payload = load_pickle_checkpoint(main_run.best_checkpoint)
    assert payload["hyper_parameters"]["task"] == setup.case.task
    assert payload["hyper_parameters"]["variant"] == setup.case.variant
    (record,) = payload[CHECKPOINT_KEY]  # frozen published backbone: left out, its source and fingerprint recorded
    assert record["source"] == str(setup.source) and len(record["fingerprint"]) == 64
    assert not any(key.startswith(f"model.{record['model_path']}.") for key in payload["state_dict"])
    # the weights rule's record of the same backbone: its file, read and fingerprinted as built (weights.json, card)
    roles = json.loads((main_run.run_dir / "weights.json").read_text())["roles"]
    (facts,) = [facts for facts in roles.values() if facts["source"] == str(setup.source)]
    assert facts["kind"] == "local backbone" and facts["fingerprint"] == record["fingerprint"]
    assert facts["files"] == [
        {"path": str(setup.source), "sha256": hashlib.sha256(setup.source.read_bytes()).hexdigest()}
    ]
    assert f"local backbone: {setup.source}" in (main_run.run_dir / "MODEL_CARD.md").read_text()


def test_evaluate_reproduces_the_val_metrics_of_train(setup, main_run) -> None:
    result = setup.task(setup.tmp / "runs", f"evaluate.checkpoint={main_run.run_dir}").evaluate()
    assert result.metrics == main_run.val
    assert json.loads((result.out_dir / "metrics.json").read_text()) == main_run.val


def test_predict_writes_one_result_per_input(setup, main_run) -> None:
    overrides, count = setup.case.predict(setup.tmp / "data")
    out = setup.tmp / "predictions"
    result = setup.task(
        setup.tmp / "runs", f"predict.checkpoint={main_run.run_dir}", f"predict.out={out}", *overrides
    ).predict()
    assert result.written == count and not result.skipped
    assert result.out.exists()


def test_export_matches_onnxruntime(setup, main_run) -> None:
    result = setup.task(setup.tmp / "runs", f"export.checkpoint={main_run.run_dir}").export()
    assert result.path.is_file() and result.opset >= 17 and result.verified_samples > 0
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4


class _Killed(RuntimeError):
    pass


class _KillAfterFirstCheckpoint(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):  # runs after the checkpoint callback saved last.ckpt
        if trainer.current_epoch == 0:
            raise _Killed("killed after the first checkpoint")


def test_resume_after_a_kill_ends_with_the_same_weights(setup, main_run, monkeypatch) -> None:
    import vfmkit.engine.runs as runs

    original = runs.build_trainer
    monkeypatch.setattr(
        runs, "build_trainer", lambda *a, **kw: original(*a, extra_callbacks=[_KillAfterFirstCheckpoint()], **kw)
    )
    results = setup.tmp / "killed"
    with pytest.raises(_Killed):
        setup.task(results).train()
    monkeypatch.setattr(runs, "build_trainer", original)
    run_dir = results / setup.case.task / "exp"
    resumed = setup.task(results, f"train.resume={run_dir}").train()
    assert resumed.run_dir == run_dir
    expected, got = _state(main_run.last_checkpoint), _state(resumed.last_checkpoint)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]


def test_unknown_spec_key_exits_2_with_a_suggestion(setup, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([setup.case.task, "train", *setup.args, "train.epochz=3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "did you mean 'train.epochs'" in err[0]


def _outputs(task: str, checkpoint, spec) -> list[torch.Tensor]:
    taskdef, trained = load_trained(get_task(task), checkpoint)
    resolution = taskdef.resolution(trained.spec)
    inputs = taskdef.verification_inputs(spec, trained, resolution)
    with torch.inference_mode():
        out = taskdef.export_plan(trained, resolution).module(*inputs)
    return list(out) if isinstance(out, tuple) else [out]


@pytest.fixture
def random_entry(monkeypatch):
    """A non-test registry entry with no published weights: ``pretrained=false`` gives a fresh random init."""
    entry = dataclasses.replace(
        registry.resolve_entry("test-radio-v2-tiny"), id="contract-random-radio", aliases=(), test_only=False
    )
    monkeypatch.setitem(registry._ENTRIES, entry.id, entry)
    return entry.id


def test_frozen_backbones_reload_to_identical_logits(setup, main_run, random_entry) -> None:
    spec = setup.task(setup.tmp / "runs").spec
    first, second = (_outputs(setup.case.task, main_run.best_checkpoint, spec) for _ in range(2))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a frozen RANDOM backbone has no source to be rebuilt from: it is saved, and reloads to the same logits
    rand = setup.task(
        setup.tmp / "random", f"{setup.case.backbone_key}={random_entry}", "model.pretrained=false", "train.epochs=1"
    ).train()
    payload = load_pickle_checkpoint(rand.best_checkpoint)
    assert CHECKPOINT_KEY not in payload
    first, second = (_outputs(setup.case.task, rand.best_checkpoint, spec) for _ in range(2))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_changed_frozen_backbone_weights_are_refused(setup, main_run) -> None:
    save_tiny_radio_checkpoint(setup.source, noise=0.01)  # other weights under the same path
    try:
        with pytest.raises(WeightsError, match=r"now holds other weights") as info:
            load_trained(get_task(setup.case.task), main_run.best_checkpoint)
        assert str(setup.source) in str(info.value)
        (record,) = load_pickle_checkpoint(main_run.best_checkpoint)[CHECKPOINT_KEY]
        assert record["fingerprint"][:16] in str(info.value)
    finally:
        save_tiny_radio_checkpoint(setup.source)
