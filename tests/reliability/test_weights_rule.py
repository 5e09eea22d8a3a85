"""One rule for where weights come from, through the `vfm` CLI (reliability audit 2: N1, N9, N14, N20).

- N1: a weights file in the spec with ``pretrained: false`` (detect ``model.backbone_checkpoint`` and
  ``model.frozen_fm.checkpoint``, a distill teacher's ``pretrained_teacher_model_path``, clip ``model.checkpoint``),
  a file for a test variant, and a classify backbone given as a local file with ``model.pretrained=false`` used to
  train on random weights (or load the file anyway): now each is exit code 2 with one line naming both keys, refused
  before the data preflight (nothing printed), with no run folder and the (malicious) file never opened.
  Consistent specs load the file: ``weights.json`` records its path, sha256 and the fingerprint of the backbone
  built from it, and the model card names it.
- N9 / N14: an empty or random-bytes timm checkpoint is one ``error:`` line (exit 2, not "interrupted"), without
  torch's advice to load unsafely and without a torch warning on stderr.
- N20: a teacher ``input_size`` that is not a multiple of the teacher's patch size is refused like
  ``model.resolution``.

The refusals run in ONE subprocess through the CLI's ``main``; the trainings that load files in a second one; the
CLIP case in this process (it registers non-test copies of the tiny models, since a test model takes no file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import pytest
import timm
from safetensors.torch import save_file
from tests.reliability.helpers import (
    assert_one_line_error,
    run_vfm_batch,
    save_torchhub_checkpoint,
    system_side_effect,
)
from tests.synthetic import make_shapes_dataset, save_tiny_radio_checkpoint
from tests.tasks.clip.clip_data import write_caption_folders
from tests.tasks.contract_cases import DETECT_TINY
from tests.tasks.detect.detect_data import make_detection_dataset
from tests.tasks.distill.distill_data import make_pattern_dataset

from vfmkit import load_backbone
from vfmkit.cli.main import main
from vfmkit.models import registry
from vfmkit.models.backbones.timm_cnn import TimmCNN
from vfmkit.models.clip_zoo import CLIP_MODELS
from vfmkit.weights.fingerprint import weights_fingerprint

RUN = ["train.epochs=1", "train.batch_size=4", "train.num_workers=0", "evaluate.batch_size=4"]
TORCH_ADVICE = ("weights_only", "Re-running", "arbitrary code execution", "UserWarning")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("weights-rule")
    image_dir, json_file = make_detection_dataset(root / "det", num_images=4, size=64, seed=0, negatives=1)
    distill = make_pattern_dataset(root / "dis", {"train": 1})
    cnn = root / "resnet18.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(cnn))
    effect = system_side_effect(root)
    empty, noise = root / "empty.ckpt", root / "noise.ckpt"
    empty.touch()
    noise.write_bytes(random.Random(7).randbytes(4096))
    images, captions = write_caption_folders(root / "cap", per_combination=1)
    return {
        "root": root,
        "detect": [f"dataset.train_data_sources=[{{image_dir: {image_dir}, json_file: {json_file}}}]", *DETECT_TINY],
        "distill": [f"dataset.train_nolabel.folder_path={distill.unlabeled}", "model.resolution=32"],
        "classify": [f"dataset.root={make_shapes_dataset(root / 'cls', {'train': 2}, size=32)}"],
        "clip": [f"dataset.train.image_dir={images}", f"dataset.train.caption_dir={captions}"],
        "tiny": save_tiny_radio_checkpoint(root / "tiny.pth.tar", noise=0.5, seed=1),  # not any random init
        "evil": save_torchhub_checkpoint(root / "evil.pth.tar", extra={"note": effect}),
        "effect": effect,
        "cnn": cnn,
        "empty": empty,
        "noise": noise,
    }


def _teacher(**fields: object) -> str:
    return "distill.teacher=[{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}]"


REFUSED = {  # case: (task, overrides(inputs), fragments of the one error line)
    "detect-backbone-checkpoint": (
        "detect",
        lambda i: ["model.backbone=c-radio-v3-b", "model.pretrained=false", f"model.backbone_checkpoint={i['evil']}"],
        ("model.backbone_checkpoint is set", "model.pretrained is false", "set model.pretrained=true"),
    ),
    "detect-test-variant-checkpoint": (
        "detect",
        lambda i: ["model.backbone=test-radio-v2-tiny", f"model.backbone_checkpoint={i['evil']}"],
        ("model.backbone_checkpoint is set", "model.backbone test-radio-v2-tiny is a test variant"),
    ),
    "detect-frozen-fm-checkpoint": (
        "detect",
        lambda i: [
            "model.backbone=test-radio-v2-tiny",
            "model.frozen_fm.enabled=true",
            "model.frozen_fm.backbone=c-radio-v3-b",
            "model.frozen_fm.pretrained=false",
            f"model.frozen_fm.checkpoint={i['evil']}",
        ],
        ("model.frozen_fm.checkpoint is set", "model.frozen_fm.pretrained is false"),
    ),
    "distill-teacher-path": (
        "distill",
        lambda i: [
            "model.backbone=test-radio-v2-tiny",
            _teacher(backbone="c-radio-v3-b", pretrained="false", pretrained_teacher_model_path=i["evil"], name="t"),
        ],
        ("distill.teacher[0].pretrained_teacher_model_path is set", "distill.teacher[0].pretrained is false"),
    ),
    "clip-checkpoint": (
        "clip",
        lambda i: ["model.type=test-radio-clip-tiny", "model.pretrained=false", f"model.checkpoint={i['evil']}"],
        ("model.checkpoint is set", "model.pretrained is false"),
    ),
    "classify-local-path-not-pretrained": (
        "classify",
        lambda i: [f"model.backbone={i['tiny']}", "model.pretrained=false"],
        ("model.backbone is a local checkpoint", "model.pretrained is false", "always loaded"),
    ),
}


@pytest.fixture(scope="module")
def refusals(inputs) -> dict:
    """Every refused spec, the pre-trained CLIP model a spec contradicts, and the N9 / N20 cases: one subprocess."""
    i, runs = inputs, inputs["root"] / "runs"
    cases = {
        name: [task, "train", *i[task], *overrides(i), *RUN, f"results_dir={runs}"]
        for name, (task, overrides, _) in REFUSED.items()
    }
    cases["clip-evaluate-pretrained-model"] = [
        "clip",
        "evaluate",
        *i["clip"],
        "model.type=test-radio-clip-tiny",
        f"model.checkpoint={i['tiny']}",
        f"results_dir={runs}",
    ]
    for damage in ("empty", "noise"):
        cnn = ["model.backbone=timm:resnet18", "model.pretrained=true", f"model.backbone_checkpoint={i[damage]}"]
        cases[f"n9-{damage}"] = ["detect", "train", *i["detect"], *cnn, *RUN, f"results_dir={runs}"]
    teacher = _teacher(backbone="test-radio-v3-tiny", pretrained="false", name="t", input_size=50)
    cases["n20"] = ["distill", "train", *i["distill"], "model.backbone=test-radio-v2-tiny", teacher, *RUN]
    cases["n20"].append(f"results_dir={runs}")
    results = run_vfm_batch(list(cases.values()), i["root"] / "logs-refused")
    return dict(zip(cases, results, strict=True))


@pytest.mark.parametrize("case", list(REFUSED))
def test_n1_a_contradiction_is_refused_before_anything_is_read(case, refusals, inputs) -> None:
    task, _, fragments = REFUSED[case]
    result = refusals[case]
    assert_one_line_error(result.code, result.err, *fragments)
    assert result.out == "", "refused before the data preflight (which prints its report)"
    assert not (inputs["root"] / "runs" / task).exists(), "no run folder"
    assert not inputs["effect"].marker.exists(), "the malicious file was never opened"


def test_n1_evaluate_of_a_pretrained_model_checks_the_rule(refusals) -> None:
    result = refusals["clip-evaluate-pretrained-model"]
    assert_one_line_error(result.code, result.err, "model.checkpoint is set", "model.type test-radio-clip-tiny")
    assert result.out == ""


@pytest.mark.parametrize("damage", ["empty", "noise"])
def test_n9_n14_a_damaged_timm_checkpoint_is_one_line(damage, refusals, inputs) -> None:
    result = refusals[f"n9-{damage}"]
    expected = "(the file is empty)" if damage == "empty" else "vfmkit reads .safetensors files"
    line = assert_one_line_error(result.code, result.err, f"{inputs[damage]}: not a readable checkpoint", expected)
    assert not any(advice in result.err for advice in TORCH_ADVICE), line
    assert not (inputs["root"] / "runs" / "detect").exists()


def test_n20_a_teacher_input_size_off_the_patch_grid_is_refused(refusals, inputs) -> None:
    result = refusals["n20"]
    assert_one_line_error(
        result.code, result.err, "distill.teacher[0].input_size 50 is not a multiple of 16", "use 48 or 64"
    )
    assert not (inputs["root"] / "runs" / "distill").exists()


def _recorded(run_dir: Path) -> dict:
    return json.loads((run_dir / "weights.json").read_text())["roles"]


def _assert_file_loaded(record: dict, file: Path, fingerprint: str) -> None:
    path = str(file.resolve())
    assert (record["kind"], record["source"]) == ("checkpoint file", path)
    assert record["files"] == [{"path": path, "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}]
    assert record["fingerprint"] == fingerprint


@pytest.fixture(scope="module")
def loaded(inputs) -> dict:
    """Consistent specs that name files: detect (timm CNN checkpoint + frozen foundation model checkpoint) and
    distill (teacher checkpoint), trained for one epoch in one subprocess."""
    i, runs = inputs, inputs["root"] / "runs-loaded"
    detect = [
        "model.backbone=timm:resnet18",
        "model.pretrained=true",
        f"model.backbone_checkpoint={i['cnn']}",
        "model.frozen_fm.enabled=true",
        "model.frozen_fm.backbone=c-radio-v2-b",
        f"model.frozen_fm.checkpoint={i['tiny']}",
    ]
    teacher = _teacher(backbone="c-radio-v2-b", pretrained_teacher_model_path=i["tiny"], name="t", input_size=32)
    cases = [
        ["detect", "train", *i["detect"], *detect, *RUN, f"results_dir={runs}"],
        ["distill", "train", *i["distill"], "model.backbone=test-radio-v2-tiny", teacher, *RUN, f"results_dir={runs}"],
    ]
    for result in run_vfm_batch(cases, i["root"] / "logs-loaded"):
        assert result.code == 0, result.err
    return {"detect": runs / "detect" / "exp", "distill": runs / "distill" / "exp"}


def test_n1_consistent_detect_files_are_loaded_and_recorded(loaded, inputs) -> None:
    recorded = _recorded(loaded["detect"])
    cnn = TimmCNN("timm:resnet18", checkpoint=inputs["cnn"], pretrained=True)
    _assert_file_loaded(recorded["backbone"], inputs["cnn"], weights_fingerprint(cnn))
    assert recorded["backbone"]["fingerprint"] != weights_fingerprint(TimmCNN("timm:resnet18", freeze_norm=True))
    frozen_fm = load_backbone("c-radio-v2-b", checkpoint=inputs["tiny"])
    _assert_file_loaded(recorded["frozen_fm"], inputs["tiny"], weights_fingerprint(frozen_fm))
    card = (loaded["detect"] / "MODEL_CARD.md").read_text()
    assert "random initialisation" not in card and "## Weights" in card
    for file in (inputs["cnn"], inputs["tiny"]):
        assert f"checkpoint file: {file.resolve()}" in card


def test_n1_a_distill_teacher_file_is_loaded_and_recorded(loaded, inputs) -> None:
    recorded = _recorded(loaded["distill"])
    teacher = load_backbone("c-radio-v2-b", checkpoint=inputs["tiny"])
    _assert_file_loaded(recorded["teacher:t"], inputs["tiny"], weights_fingerprint(teacher))
    assert (recorded["backbone"]["kind"], recorded["backbone"]["source"]) == ("test variant", "test variant, seed 0")
    assert recorded["backbone"]["files"] == []
    card = (loaded["distill"] / "MODEL_CARD.md").read_text()
    assert f"- teacher:t: `c-radio-v2-b`, checkpoint file: {inputs['tiny'].resolve()}" in card


def test_n1_a_clip_checkpoint_is_loaded_and_recorded(inputs, monkeypatch, capsys) -> None:
    """``model.checkpoint`` of a RADIO-CLIP model is its image tower (non-test copies of the tiny models)."""
    vision = dataclasses.replace(registry.resolve_entry("test-radio-v2-tiny"), id="file-radio-tiny", aliases=())
    vision = dataclasses.replace(vision, test_only=False)
    monkeypatch.setitem(registry._ENTRIES, vision.id, vision)
    clip = dataclasses.replace(CLIP_MODELS.resolve("test-radio-clip-tiny"), id="file-radio-clip-tiny", aliases=())
    clip = dataclasses.replace(clip, vision=vision.id, test_only=False)
    monkeypatch.setitem(CLIP_MODELS._entries, clip.id, clip)
    runs = inputs["root"] / "runs-clip"
    model = ["model.type=file-radio-clip-tiny", "model.projection=linear", "model.image_size=32"]
    model.append(f"model.checkpoint={inputs['tiny']}")
    with pytest.raises(SystemExit) as exit_info:
        main(["clip", "train", *inputs["clip"], *model, *RUN, f"results_dir={runs}"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    recorded = _recorded(runs / "clip" / "exp")
    tower = load_backbone(vision.id, checkpoint=inputs["tiny"])
    _assert_file_loaded(recorded["image tower"], inputs["tiny"], weights_fingerprint(tower))
    assert recorded["text tower"]["kind"] == "test variant"
