"""Distillation through the engine (``vfmkit.Task("distill", ...).train()``): a random tiny RADIO student learns,
without labels, classes only its teacher sees; the run folder is a backbone (``load_backbone``, ``vfm embed``) whose
heads speak the teacher's space; export writes the adapted-backbone folder and an ONNX graph that matches it.

The toy teachers of :mod:`tests.tasks.distill.distill_data` are modules, not published models: the test serves them
under registry-like names through the loader the task uses (everything else is the real path: spec, loaders,
Lightning, checkpoints, reload, evaluation).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tests.synthetic import save_tiny_radio_checkpoint
from tests.tasks.contract_cases import CASES
from tests.tasks.distill.distill_data import (
    PATTERNS,
    SIZE,
    ColourTeacher,
    PatternTeacher,
    load_images,
    make_pattern_dataset,
)

import vfmkit.tasks.distill.model as distill_model
import vfmkit.weights.rule as rule
from vfmkit import Task, load_backbone
from vfmkit.cli.main import main
from vfmkit.engine.trained import load_trained
from vfmkit.errors import WeightsError
from vfmkit.export.runtime import OnnxModel
from vfmkit.models.backbones.radio.model import RadioBackbone
from vfmkit.tasks import get_task
from vfmkit.tasks.distill.validate import knn_top1

CHANCE = 1.0 / len(PATTERNS)
ORACLES = {
    "pattern-oracle": PatternTeacher,
    "colour-oracle": ColourTeacher,
    "colour-x1e3": lambda: ColourTeacher(scale=1e3),
    "pattern-x1e-3": lambda: PatternTeacher(scale=1e-3),
}
STUDENT = ["model.backbone=test-radio-v2-tiny", "model.pretrained=false", f"model.resolution={SIZE}"]
SCHEDULE = [
    "train.num_workers=0",
    "train.batch_size=32",
    "train.optimizer.lr=2e-3",
    "train.optimizer.weight_decay=0.01",
    "train.optimizer.backbone_lr_scale=1",
    "train.optimizer.layer_decay=1",
    "train.scheduler.type=constant",
    "train.scheduler.warmup_epochs=0",
    "distill.phi_s.freeze_after=5",
    "distill.phi_s.update_period=1",
]


@pytest.fixture(scope="module")
def oracles():
    """``distill.teacher[].backbone: pattern-oracle | colour-oracle`` load the toy teachers (the weights rule knows
    them as models with published weights, which is what they stand for)."""
    original, registered = distill_model.load_backbone, rule.registered_backbone

    def load(name, *args, **kwargs):
        return ORACLES[str(name)]().eval() if str(name) in ORACLES else original(name, *args, **kwargs)

    def known(name):
        return rule.RegisteredModel(name, False, "toy oracle") if name in ORACLES else registered(name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distill_model, "load_backbone", load)
        patch.setattr(rule, "registered_backbone", known)
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pattern_dataset(tmp_path_factory.mktemp("patterns"))


@pytest.fixture(scope="module")
def single(data, oracles, tmp_path_factory):
    teacher = "{backbone: pattern-oracle, name: pattern, loss_type: mse, summary_loss_type: mse}"
    overrides = [
        *STUDENT,
        *SCHEDULE,
        f"dataset.train_nolabel.folder_path={data.unlabeled}",
        f"dataset.knn_validation.root={data.by_pattern}",
        f"distill.teacher=[{teacher}]",
        "train.epochs=16",
        "train.val_every=16",
        f"results_dir={tmp_path_factory.mktemp('runs')}",
    ]
    task = Task("distill", None, overrides)
    result = task.train()
    return SimpleNamespace(task=task, result=result, overrides=overrides)


def test_one_teacher_student_learns_classes_without_labels(data, single):
    teacher_knn = knn_top1(PatternTeacher(), data.by_pattern, resolution=SIZE).top1 / 100.0
    val = single.result.val
    assert teacher_knn >= 0.95
    assert val["knn_top1_before"] <= CHANCE + 0.15, "the random student should not see the patterns"
    assert val["knn_top1"] >= CHANCE + 0.40, val
    assert val["knn_top1"] >= 0.9 * teacher_knn, (teacher_knn, val)
    assert val["control_knn_top1"] is None and val["pattern/summary_cosine"] > 0.9, val  # fidelity, teacher space
    card = (single.result.run_dir / "MODEL_CARD.md").read_text()
    assert "| domain (dataset.knn_validation) | " in card and f"{100 * val['knn_top1']:.2f}% |" in card
    rows = (single.result.run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 17 and "train/pattern/summary_loss" in rows[0]
    first, last = (float(r.split(",")[rows[0].split(",").index("train/loss")]) for r in (rows[1], rows[-1]))
    assert last < 0.3 * first, (first, last)


def test_the_run_folder_is_a_backbone_with_teacher_space_heads(data, single, tmp_path):
    run_dir = single.result.run_dir
    _, trained = load_trained(get_task("distill"), run_dir)
    model = trained.model
    images = load_images(data.files["val"][:8])
    loaded = load_backbone(run_dir, adaptors=["pattern"])
    assert isinstance(loaded, RadioBackbone) and loaded.model_id == str(run_dir)
    with torch.no_grad():
        expected, got = model.student(images), loaded(images)
    torch.testing.assert_close(got.summary, expected.summary, rtol=0, atol=1e-5)
    kinds = model.standardizers["pattern"]
    for kind in ("summary", "features"):
        teacher_space = kinds[kind].inverse(getattr(expected.adaptors["pattern"], kind))
        torch.testing.assert_close(getattr(got.adaptors["pattern"], kind), teacher_space, rtol=1e-4, atol=1e-5)
    # `vfm embed photos/ --model runs/distill/exp`: the adapted student, anywhere a model goes
    out = tmp_path / "emb.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "embed",
                str(data.root / "images" / "val"),
                "--model",
                str(run_dir),
                "-o",
                str(out),
                "--adaptor",
                "pattern",
            ]
        )
    assert exit_info.value.code == 0
    tensors = load_file(str(out))
    assert set(tensors) == {"summary", "adaptor.pattern.summary"} and len(tensors["summary"]) == len(data.files["val"])
    assert knn_top1(load_backbone(run_dir), data.by_pattern, resolution=SIZE).top1 >= 100 * (CHANCE + 0.40)
    # ... and in a task spec: a classifier on the adapted student
    spec = Task("classify", None, ["dataset.root=none", f"model.backbone={run_dir}", f"model.resolution={SIZE}"]).spec
    classifier = get_task("classify").build_model(spec, {"classes": list(PATTERNS)}, pretrained=True)
    torch.testing.assert_close(classifier.backbone(images).summary, expected.summary, rtol=0, atol=1e-5)
    assert classifier.backbone.weights_source == str(run_dir.resolve())


def test_export_writes_onnx_and_the_adapted_folder(single, tmp_path):
    out = tmp_path / "export" / "student.onnx"
    overrides = [*single.overrides, f"export.checkpoint={single.result.run_dir}", f"export.out={out}"]
    result = Task("distill", None, overrides).export()
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4 and result.verified_samples == 4
    assert OnnxModel(out).output_names == ["summary", "features", "pattern.summary", "pattern.features"]
    manifest = json.loads((out.parent / "backbone" / "vfmkit_backbone.json").read_text())
    assert manifest["adaptors"]["pattern"]["space"] == "teacher"
    assert manifest["adaptors"]["pattern"]["teacher"]["backbone"] == "pattern-oracle"


def test_teacher_cache_serves_later_epochs_and_other_students(data, oracles, tmp_path):
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for path in data.files["val"][:16]:
        (unlabeled / path.name).write_bytes(path.read_bytes())
    teacher = "{backbone: pattern-oracle, name: pattern}"
    common = [
        *STUDENT,
        *SCHEDULE,
        f"dataset.train_nolabel.folder_path={unlabeled}",
        f"distill.teacher=[{teacher}]",
        "distill.cache_teacher_outputs=true",
        f"distill.cache_dir={tmp_path / 'cache'}",
        "train.batch_size=8",
        f"results_dir={tmp_path / 'runs'}",
    ]

    def hit_rates(*more: str) -> list[float]:
        result = Task("distill", None, [*common, *more]).train()
        rows = (result.run_dir / "metrics.csv").read_text().splitlines()
        column = rows[0].split(",").index("train/teacher_cache_hit_rate")
        return [float(row.split(",")[column]) for row in rows[1:]]

    assert hit_rates("train.epochs=2") == [0.0, 1.0]  # epoch 1 fills the cache, epoch 2 never runs the teacher
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 16
    assert hit_rates("train.epochs=1", "model.trainable_blocks=1", "train.seed=7") == [1.0]  # another student


@pytest.mark.slow
@pytest.mark.parametrize("normalization", ["phi_s", "none"])
def test_two_teachers_on_scales_1e6_apart_through_the_engine(data, oracles, tmp_path, normalization):
    """The engine version of ``test_distill_learning``'s comparison (colour k-NN on the control set)."""
    teachers = [
        "{backbone: colour-x1e3, name: colour, loss_type: mse, summary_loss_type: mse}",
        "{backbone: pattern-x1e-3, name: pattern, loss_type: mse, summary_loss_type: mse}",
    ]
    overrides = [
        *STUDENT,
        *SCHEDULE,
        f"dataset.train_nolabel.folder_path={data.unlabeled}",
        f"dataset.knn_validation.root={data.by_pattern}",
        f"dataset.control.root={data.by_colour}",
        f"distill.teacher=[{', '.join(teachers)}]",
        f"distill.feature_normalization={normalization}",
        "train.epochs=16",
        "train.val_every=16",
        f"results_dir={tmp_path}",
    ]
    val = Task("distill", None, overrides).train().val
    pattern, colour = val["knn_top1"], val["control_knn_top1"]
    if normalization == "phi_s":
        assert colour >= 0.9 and pattern >= 0.9, val
    else:  # raw MSE: the x1e-3 teacher is lost (the phi_s run of the same test reaches >= 0.9 on it)
        assert colour >= 0.9 and pattern <= 0.9 - 0.2, val


def test_a_changed_teacher_file_is_refused_by_evaluate(tmp_path):
    case = CASES[("distill", None)]
    args = [*case.data(tmp_path / "data"), *case.extra, *STUDENT, "train.epochs=1", "train.num_workers=0"]
    args += ["train.batch_size=16", "dataset.knn_validation=null", "dataset.control=null"]  # one step, no validation
    run = Task("distill", None, [*args, f"results_dir={tmp_path / 'runs'}"]).train().run_dir
    teacher = tmp_path / "data" / "teacher.pth.tar"
    save_tiny_radio_checkpoint(teacher, noise=0.5, seed=2)  # other weights at the same path
    with pytest.raises(WeightsError, match=r"teacher 'tiny' \(.*teacher.pth.tar\).*other teacher weights"):
        Task("distill", None, [*args, f"evaluate.checkpoint={run}"]).evaluate()
