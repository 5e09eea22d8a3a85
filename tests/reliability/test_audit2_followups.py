"""Issue 16's "Also found" list and the audit's message cases (N10, N13, N14, N18, N19), through the CLI where users
meet them, on generated data."""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import re
import shutil
import tarfile
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import BaseModel
from tests.tasks.clip.clip_data import CLASS_NAMES, COMBINATIONS, caption, make_images
from tests.tasks.contract_cases import UNIVERSAL
from tests.tasks.detect.detect_data import make_detection_dataset
from tests.tasks.universal.universal_data import make_instances_dataset

from vfmkit.cli.main import main
from vfmkit.engine.taskdef import TaskDef
from vfmkit.spec.loader import load_spec
from vfmkit.tasks import ONNX_PREDICT, get_task, task_names


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
    """The template with every commented-out section (``name: null`` or ``[]``, then ``# name:`` and its ``#   ...``
    lines) written in place of its value, repeated until none is left: what a user gets by uncommenting them."""
    lines = text.splitlines()
    while True:
        for index in range(len(lines) - 1):
            null = re.fullmatch(r"(\s*)([A-Za-z_]\w*): (?:null|\[\])", lines[index])
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


# --- N14: CLIP pair readers and zero-shot --------------------------------------------------------------------------


def _pairs(folder: Path) -> list[tuple[str, str]]:
    """12 generated 32 px images (``folder/img/NNN.png``) and their captions, relative to ``folder``."""
    images, labels = make_images(1, seed=0, size=32)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        image.save(folder / "img" / f"{index:03d}.png")
        rows.append((f"img/{index:03d}.png", caption(*COMBINATIONS[label])))
    return rows


def _shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


CLIP_EVAL = ["model.type=test-radio-clip-tiny", "model.projection=linear", "model.image_size=32"]


def test_n14_clip_pairs_with_a_bom_numeric_captions_and_webdataset_folders(tmp_path, capsys):
    """A CSV saved as Excel's "CSV UTF-8" (BOM) reads its header; a numeric JSONL caption is named as such (not
    "empty caption"); WebDataset members under `./` or `v1.0/` pair by folder + name up to the first dot."""
    rows = _pairs(tmp_path)
    with (tmp_path / "pairs.csv").open("w", newline="", encoding="utf-8-sig") as handle:
        csv.writer(handle).writerows([("image", "caption"), *rows])
    evaluate = ["clip", "evaluate", *CLIP_EVAL, f"results_dir={tmp_path / 'runs'}", "evaluate.batch_size=12"]
    code, out, err = _cli([*evaluate, f"dataset.val={{type: csv, file: {tmp_path / 'pairs.csv'}}}"], capsys)
    assert code == 0 and "val: 12 images, 12 distinct captions" in out, err

    lines = [json.dumps({"image": image, "caption": text}) for image, text in rows]
    lines[3] = json.dumps({"image": rows[3][0], "caption": 5})
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = _cli([*evaluate, f"dataset.val={{type: jsonl, file: {tmp_path / 'pairs.jsonl'}}}"], capsys)
    assert code == 2 and "pairs.jsonl:4: the caption of image" in err and "is not a string: 5" in err, err
    assert "empty caption" not in err

    for prefix in ("./", "v1.0/"):
        members = []
        for image, text in rows:
            stem = Path(image).stem
            members += [
                (f"{prefix}{stem}.png", (tmp_path / image).read_bytes()),
                (f"{prefix}{stem}.txt", text.encode()),
            ]
        shard = _shard(tmp_path / f"shard-{len(prefix)}.tar", members)
        code, out, err = _cli([*evaluate, f"dataset.val={{type: wds, shards: {shard}}}"], capsys)
        assert code == 0 and "val: 12 images, 12 distinct captions" in out, (prefix, err)


def test_n14_zeroshot_says_why_accuracy_is_not_computed(tmp_path, capsys):
    images, labels = make_images(1, seed=0, size=32)
    for index, (image, label) in enumerate(zip(images[:6], labels[:6], strict=True)):
        folder = tmp_path / "photos" / ("Red Circle" if label == 0 else CLASS_NAMES[label])
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index}.png")
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8-sig")  # a BOM is not part of the first name
    command = ["clip", "zeroshot", tmp_path / "photos", "--model", "test-radio-clip-tiny", "--classes", classes]
    code, out, err = _cli([*command, "--out", tmp_path / "z.csv", "--resolution", "32"], capsys)
    assert code == 0, err
    assert "accuracy not computed: the folder(s) 'Red Circle' in" in out and "top-1" not in out
    assert "these differ in case: 'Red Circle' vs 'red circle'" in out
    (tmp_path / "photos" / "Red Circle").rename(tmp_path / "photos" / "red circle")
    code, out, err = _cli([*command, "--out", tmp_path / "z.csv", "--resolution", "32"], capsys)
    assert code == 0 and "top-1 " in out and "accuracy not computed" not in out, err


# --- N18, N19: messages --------------------------------------------------------------------------------------------


def test_n18_evaluate_with_an_onnx_names_every_task_whose_predict_takes_one(tmp_path, capsys):
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"not used")
    accepting = sorted(
        name
        for name in task_names()
        if any(
            cls.onnx_predictor is not TaskDef.onnx_predictor
            for cls in vars(importlib.import_module(f"vfmkit.tasks.{name}.hooks")).values()
            if isinstance(cls, type) and issubclass(cls, TaskDef)
        )
    )
    assert sorted(ONNX_PREDICT) == accepting == ["classify", "detect", "segment", "universal"]
    for task, data in (
        ("detect", "dataset.train_data_sources=[{image_dir: i, json_file: a.json}]"),
        ("universal", "dataset.train={images: i, annotations: a.json}"),
    ):
        code, _, err = _cli([task, "evaluate", data, f"evaluate.checkpoint={graph}"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "is an exported ONNX graph" in err and "classify, segment, detect, universal" in err, err


@pytest.mark.parametrize(
    ("task", "override", "message"),
    [
        (
            "universal",
            "model.resolution=48",
            "error: command-line override: model.resolution must be a multiple of 32, got 48",
        ),
        (
            "distill",
            "distill.teacher=[{backbone: a, name: t}, {backbone: b, name: t}]",
            "error: command-line override: distill.teacher: teachers share the head name(s) ['t']",
        ),
        ("detect", "dataset.format=yolo", "error: command-line override: dataset.root is required for format 'yolo'"),
        ("universal", "dataset.task_prob={semantic: 0.5, instance: 0.6}", "'dataset.task_prob': task probabilities"),
    ],
)
def test_n19_section_checks_print_the_key_not_the_section(task, override, message, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    assert _cli(["spec", "init", task, "-o", spec], capsys)[0] == 0
    code, _, err = _cli(["spec", "show", "-c", spec, override], capsys)
    assert code == 2 and message in err and "{" not in err.split(message)[-1] and "Value error" not in err, err
    assert len(err.strip().splitlines()) == 1


# --- N10: repeated CLIP captions -----------------------------------------------------------------------------------


def test_n10_repeated_captions_are_warned_about_and_the_dropped_share_is_logged(tmp_path, capsys):
    """16 images all captioned "a thing", batches of 8: each batch keeps 1 sample (14 of 16 dropped per epoch); the
    preflight says so and metrics.csv records train/dropped_fraction 0.875."""
    rows = _pairs(tmp_path)
    with (tmp_path / "same.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("image", "caption"), *[(image, "a thing") for image, _ in rows]])
    extra = _colour_images(tmp_path / "img4", 4, (120, 120, 120))
    with (tmp_path / "same.csv").open("a", newline="") as handle:
        csv.writer(handle).writerows([(f"img4/{p.name}", "a thing") for p in sorted(extra.iterdir())])
    train = [
        "clip",
        "train",
        *CLIP_EVAL,
        f"results_dir={tmp_path / 'runs'}",
        f"dataset.train={{type: csv, file: {tmp_path / 'same.csv'}}}",
        "train.epochs=1",
        "train.batch_size=8",
        "train.num_workers=0",
    ]
    code, out, err = _cli(train, capsys)
    assert code == 0, err
    assert "train: 16 images, 16 captions" in out
    assert "warning: train: 1 distinct caption(s) among 16 of 16 images" in out
    assert "about 88% of the samples of each batch of 8" in out
    rows = list(csv.DictReader((tmp_path / "runs" / "clip" / "exp" / "metrics.csv").open()))
    assert float(rows[-1]["train/dropped_fraction"]) == pytest.approx(14 / 16)


# --- predict ids: results score against their own annotation file --------------------------------------------------


def _coco_eval(annotation_file: Path, results_file: Path, iou_type: str) -> float:
    """AP@[.50:.95] of a results file against an annotation file, by pycocotools (the standard tool)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotation_file))
        evaluation = COCOeval(truth, truth.loadRes(str(results_file)), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


DETECT_TINY = [
    "model.backbone=test-radio-v2-tiny",
    "model.pretrained=false",
    "model.resolution=64",
    "model.hidden_dim=32",
    "model.nheads=2",
    "model.num_queries=20",
    "model.num_select=20",
    "model.dec_layers=1",
    "model.enc_layers=1",
    "model.dim_feedforward=32",
    "model.dn_number=4",
    "model.enc_n_points=2",
    "model.dec_n_points=2",
    "train.batch_size=4",
    "train.num_workers=0",
    "train.optimizer.lr=3e-3",
    "evaluate.batch_size=4",
    "predict.batch_size=4",
]


def test_predict_ids_detect_results_score_against_the_val_annotation_file(tmp_path, capsys):
    """`vfm detect predict predict.source=<the val JSON>` keeps that file's image ids (100..), so its results scored
    by pycocotools against the file give evaluate's AP; over a folder, ids are 1..N in sorted path order, with
    images.json mapping them to files."""
    image_dir, json_file = make_detection_dataset(tmp_path / "det", num_images=8, negatives=2)
    source = f"[{{image_dir: {image_dir}, json_file: {json_file}}}]"
    args = ["model.head=rtdetr", *DETECT_TINY, f"results_dir={tmp_path / 'runs'}", "train.epochs=2"]
    args += [f"dataset.train_data_sources={source}", f"dataset.val_data_sources={source}"]
    args += [f"dataset.augment.{key}=0" for key in ("photometric", "zoom_out", "iou_crop", "hflip")]
    code, _, err = _cli(["detect", "train", *args], capsys)
    assert code == 0, err
    run = tmp_path / "runs" / "detect" / "exp"
    code, _, err = _cli(["detect", "evaluate", *args, f"evaluate.checkpoint={run}"], capsys)
    assert code == 0, err
    evaluated = json.loads((run / "evaluate" / "val" / "metrics.json").read_text())["ap"]
    predict = ["detect", "predict", *args, f"predict.checkpoint={run}", "predict.conf_threshold=0"]
    code, _, err = _cli([*predict, f"predict.source={json_file}", f"predict.out={tmp_path / 'by-json'}"], capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "by-json" / "results.json").read_text())
    assert {r["image_id"] for r in results} == set(range(100, 108))
    assert evaluated > 0 and _coco_eval(json_file, tmp_path / "by-json" / "results.json", "bbox") == pytest.approx(
        evaluated, abs=1e-9
    )
    code, _, err = _cli([*predict, f"predict.source={image_dir}", f"predict.out={tmp_path / 'by-folder'}"], capsys)
    assert code == 0, err
    images = json.loads((tmp_path / "by-folder" / "images.json").read_text())
    assert [(i["id"], Path(i["file_name"]).name) for i in images] == [(k + 1, f"img_{k:03d}.png") for k in range(8)]
    assert {r["image_id"] for r in json.loads((tmp_path / "by-folder" / "results.json").read_text())} <= set(
        range(1, 9)
    )
    (tmp_path / "other.json").write_text("{}")
    code, _, err = _cli([*predict, f"predict.source={tmp_path / 'other.json'}"], capsys)
    assert code == 2 and "is an annotation file that the dataset does not name" in err, err


def _whole_image_objects(annotation_file: Path) -> Path:
    """A copy of a COCO instances file whose objects cover (nearly) whole images, so that even an untrained model's
    image-sized masks match some of them: a non-zero AP that depends on every image id being right."""
    data = json.loads(annotation_file.read_text())
    objects = []
    for index, image in enumerate(data["images"]):
        w, h = image["width"], image["height"]
        for category, (x0, y0) in zip((3, 7), ((0, 0), (1, 1)), strict=True):
            polygon = [x0, y0, w, y0, w, h, x0, h]
            box = [x0, y0, w - x0, h - y0]
            objects.append({"id": 2 * index + category, "image_id": image["id"], "category_id": category})
            objects[-1].update(bbox=box, area=box[2] * box[3], iscrowd=0, segmentation=[polygon])
    target = annotation_file.with_name("whole_" + annotation_file.name)
    target.write_text(json.dumps({**data, "annotations": objects}))
    return target


def test_predict_ids_universal_instances_score_against_the_val_annotation_file(tmp_path, capsys):
    """`vfm universal predict predict.task=instance predict.source=<the val instances JSON>` keeps its image ids
    (100..), so pycocotools scores its instances.json against the file as evaluate's mask AP; over a folder the ids
    are 1..N (never the file stem, never a string) with images.json beside."""
    root = make_instances_dataset(tmp_path / "data", {"train": 4, "val": 2}, size=32)
    val = _whole_image_objects(root / "annotations" / "instances_val.json")
    args = ["dataset.format=coco_instances", *UNIVERSAL, "model.backbone=test-radio-v2-tiny", "train.epochs=1"]
    args += ["train.batch_size=4", "train.num_workers=0", "evaluate.batch_size=4", f"results_dir={tmp_path / 'runs'}"]
    args += [f"dataset.train.images={root / 'images' / 'train'}", f"dataset.val.images={root / 'images' / 'val'}"]
    args += [f"dataset.train.annotations={root / 'annotations' / 'instances_train.json'}"]
    args += [f"dataset.val.annotations={val}"]
    assert _cli(["universal", "train", *args], capsys)[0] == 0
    run = tmp_path / "runs" / "universal" / "exp"
    assert _cli(["universal", "evaluate", *args, f"evaluate.checkpoint={run}"], capsys)[0] == 0
    evaluated = json.loads((run / "evaluate" / "val" / "metrics.json").read_text())["mask_ap"]
    predict = ["universal", "predict", *args, f"predict.checkpoint={run}", "predict.task=instance"]
    predict += ["predict.score_threshold=0"]
    code, _, err = _cli([*predict, f"predict.source={val}", f"predict.out={tmp_path / 'by-json'}"], capsys)
    assert code == 0, err
    results = tmp_path / "by-json" / "instances.json"
    assert {r["image_id"] for r in json.loads(results.read_text())} == {100, 101}
    assert evaluated > 0 and _coco_eval(val, results, "segm") == pytest.approx(evaluated, abs=1e-9)
    code, _, err = _cli(
        [*predict, f"predict.source={root / 'images' / 'val'}", f"predict.out={tmp_path / 'f'}"], capsys
    )
    assert code == 0, err
    images = json.loads((tmp_path / "f" / "images.json").read_text())
    assert [i["id"] for i in images] == [1, 2] and [Path(i["file_name"]).name for i in images] == ["000.png", "001.png"]
    assert {r["image_id"] for r in json.loads((tmp_path / "f" / "instances.json").read_text())} <= {1, 2}


# --- the split that picked the checkpoint vs the reported figure ----------------------------------------------------


def test_selection_split_a_test_split_is_evaluated_after_training_as_the_unbiased_figure(tmp_path, capsys):
    """With a test split, train evaluates the best checkpoint on it too (evaluate/test/metrics.json, as `vfm
    classify evaluate evaluate.split=test` computes it) and the card and the final line give it as the unbiased
    figure; without one they say that val picked the checkpoint."""
    for split, count in (("train", 4), ("val", 2), ("test", 3)):
        for name, colour in (("blue", (40, 40, 200)), ("red", (200, 40, 40))):
            _colour_images(tmp_path / "data" / split / name, count, colour)
    args = ["model.backbone=test-radio-v2-tiny", "model.pretrained=false", "model.resolution=32", "train.epochs=1"]
    args += ["train.batch_size=4", "train.num_workers=0", f"results_dir={tmp_path / 'runs'}", "model.mode=finetune"]
    code, out, err = _cli(["classify", "train", f"dataset.root={tmp_path / 'data'}", *args], capsys)
    assert code == 0, err
    run = tmp_path / "runs" / "classify" / "exp"
    test = json.loads((run / "evaluate" / "test" / "metrics.json").read_text())
    assert test["images"] == 6 and "(val picked the checkpoint; test did not)" in out.splitlines()[-1]
    card = (run / "MODEL_CARD.md").read_text()
    assert "Test split (not used to pick the checkpoint: the unbiased figure):" in card
    assert f"- top1: {test['top1']:.4f}" in card and "Validation split (it picked the checkpoint by `val/top1`" in card
    evaluate = ["classify", "evaluate", f"dataset.root={tmp_path / 'data'}", *args, f"evaluate.checkpoint={run}"]
    assert _cli([*evaluate, "evaluate.split=test"], capsys)[0] == 0
    assert json.loads((run / "evaluate" / "test" / "metrics.json").read_text()) == test

    shutil.rmtree(tmp_path / "data" / "test")
    code, out, err = _cli(["classify", "train", f"dataset.root={tmp_path / 'data'}", *args, "name=no-test"], capsys)
    assert code == 0, err
    assert "test" not in out.split("run folder:")[0]  # an absent test split is not reported
    assert "(the split that picked the checkpoint: optimistic)" in out.splitlines()[-1]
    card = (tmp_path / "runs" / "classify" / "no-test" / "MODEL_CARD.md").read_text()
    assert "It also picked the checkpoint by `val/top1`, so these figures are optimistic" in card
    assert not (tmp_path / "runs" / "classify" / "no-test" / "evaluate" / "test").exists()


def test_selection_split_distill_reports_before_after_on_held_out_queries(tmp_path, capsys):
    """Distillation's "after" k-NN on val is the figure that picked best.ckpt: with `<root>/test/<class>/` the card's
    before/after table is the held-out queries'; without, it says the val figure is optimistic."""
    root = _knn_root(tmp_path / "knn", {"ring": (200, 40, 40), "cross": (40, 40, 200)})
    for name, colour in (("ring", (200, 40, 40)), ("cross", (40, 40, 200))):
        _colour_images(root / "test" / name, 2, colour)
    unlabeled = _colour_images(tmp_path / "unlabeled", 4, (90, 160, 90))
    spec = tmp_path / "dis.yaml"
    spec.write_text(DISTILL_SPEC + f"results_dir: {tmp_path / 'runs'}\n")
    data = [f"dataset.train_nolabel.folder_path={unlabeled}", f"dataset.knn_validation.root={root}"]
    code, out, err = _cli(["distill", "train", "-c", spec, *data], capsys)
    assert code == 0, err
    assert "k-NN domain (test): 2 classes, 6 memory, 4 query" in out
    run = tmp_path / "runs" / "distill" / "x"
    test = json.loads((run / "evaluate" / "test" / "metrics.json").read_text())
    card = (run / "MODEL_CARD.md").read_text()
    assert "## Before / after distillation (test," in card and "held-out test queries, not used to pick" in card
    assert "knn_top1: " in card.split("Test split")[1] and test["knn_top1_before"] is not None

    shutil.rmtree(root / "test")
    code, out, err = _cli(["distill", "train", "-c", spec, *data, "name=no-test"], capsys)
    assert code == 0, err
    card = (tmp_path / "runs" / "distill" / "no-test" / "MODEL_CARD.md").read_text()
    assert "## Before / after distillation (val," in card and "also picked the checkpoint, so the domain's" in card
