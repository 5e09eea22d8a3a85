"""The universal task through ``vfmkit.Task`` beyond the contract (which runs COCO panoptic with a OneFormer head):
COCO-instances and semantic-mask data, the monitor each format picks, predict for every task in its file format,
an export with the task fixed, the ``oneformer`` alias."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.tasks.contract_cases import UNIVERSAL
from tests.tasks.universal.universal_data import SEMANTIC_PALETTE, make_instances_dataset, make_semantic_dataset

from vfmkit import Task
from vfmkit.cli.main import main
from vfmkit.data.coco_masks import segmentation_to_mask
from vfmkit.errors import VfmError
from vfmkit.metrics.panoptic import read_panoptic_png
from vfmkit.tasks import canonical_task

QUICK = [
    *UNIVERSAL,
    "model.backbone=test-radio-v2-tiny",
    "train.epochs=1",
    "train.batch_size=4",
    "train.num_workers=0",
    "evaluate.batch_size=4",
]


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    """A OneFormer trained one epoch on COCO-instances data (polygons, RLE and a crowd RLE)."""
    tmp = tmp_path_factory.mktemp("instances")
    root = make_instances_dataset(tmp / "data", {"train": 4, "val": 2}, size=32)
    data = ["dataset.format=coco_instances"]
    for split in ("train", "val"):
        data += [f"dataset.{split}.images={root / 'images' / split}"]
        data += [f"dataset.{split}.annotations={root / 'annotations' / f'instances_{split}.json'}"]
    args = [*data, *QUICK, f"results_dir={tmp / 'runs'}"]
    return root, args, Task("universal", None, args).train()


def test_coco_instances_are_scored_by_mask_ap_only(instances):
    root, args, result = instances
    assert result.monitor == "val/mask_ap" and result.val["tasks"] == ["instance"]
    assert isinstance(result.val["mask_ap"], float) and 0.0 <= result.val["mask_ap"] <= 1.0
    assert result.val["pq"] is None and result.val["miou"] is None  # no stuff, unannotated pixels
    assert [row["id"] for row in result.val["per_class"]] == [3, 7]  # read_coco's order: ascending ids
    header = (result.run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "val/mask_ap" in header.split(",")


def test_instance_predictions_are_coco_results_with_rle_and_original_ids(instances):
    root, args, result = instances
    out = root.parent / "predict-instances"
    overrides = [f"predict.checkpoint={result.run_dir}", f"predict.source={root / 'images' / 'val'}"]
    overrides += ["predict.task=instance", "predict.score_threshold=0", f"predict.out={out}"]
    predicted = Task("universal", None, [*args, *overrides]).predict()
    assert predicted.written == 2 and sorted(p.name for p in (out / "overlays").iterdir()) == ["000.png", "001.png"]
    results = json.loads((out / "instances.json").read_text())
    assert results and {r["category_id"] for r in results} <= {3, 7}
    assert {r["image_id"] for r in results} <= {1, 2}  # a folder: ids 1..N in sorted path order
    assert {Path(r["file_name"]).name for r in results} <= {"000.png", "001.png"}
    images = json.loads((out / "images.json").read_text())
    assert [(i["id"], Path(i["file_name"]).name, i["width"]) for i in images] == [
        (1, "000.png", 32),
        (2, "001.png", 32),
    ]
    first = results[0]
    assert isinstance(first["segmentation"]["counts"], str) and first["segmentation"]["size"] == [32, 32]
    mask = segmentation_to_mask(first["segmentation"], 32, 32)
    assert mask.sum() == 0 or first["bbox"][2] > 0
    assert all(0.0 <= r["score"] <= 1.0 for r in results)


def test_export_with_a_fixed_task_takes_images_only(instances):
    root, args, result = instances
    exported = Task("universal", None, [*args, f"export.checkpoint={result.run_dir}", "export.task=instance"]).export()
    assert exported.input_names == ["images"] and exported.output_names == ["pred_logits", "pred_masks"]
    assert exported.max_abs_diff is not None and exported.max_abs_diff <= 1e-4


@pytest.fixture(scope="module")
def semantic(tmp_path_factory):
    """A Mask2Former trained one epoch on semantic masks (sparse palette ids, ignored pixels)."""
    tmp = tmp_path_factory.mktemp("semantic")
    root = make_semantic_dataset(tmp / "data", {"train": 4, "val": 2}, size=32)
    data = [
        "dataset.format=semantic_masks",
        f"dataset.semantic.root={root}",
        f"dataset.semantic.palette={SEMANTIC_PALETTE}",
    ]
    args = [*data, *QUICK, "model.head=mask2former", f"results_dir={tmp / 'runs'}"]
    return root, args, Task("universal", None, args).train()


def test_semantic_masks_are_scored_by_miou(semantic):
    root, args, result = semantic
    assert result.monitor == "val/miou" and result.val["tasks"] == ["panoptic", "semantic"]
    assert isinstance(result.val["miou"], float) and result.val["mask_ap"] is None and result.val["pq_things"] is None
    assert [row["id"] for row in result.val["per_class"]] == [3, 7, 12, 25]  # the palette ids


@pytest.mark.parametrize("task", ["semantic", "panoptic"])
def test_predictions_use_the_original_ids(semantic, task):
    root, args, result = semantic
    out = root.parent / f"predict-{task}"
    overrides = [f"predict.checkpoint={result.run_dir}", f"predict.source={root / 'images' / 'val'}"]
    predicted = Task("universal", None, [*args, *overrides, f"predict.task={task}", f"predict.out={out}"]).predict()
    assert predicted.written == 2 and len(list((out / "overlays").iterdir())) == 2
    if task == "semantic":
        mask = np.asarray(Image.open(out / "semantic" / "000.png"))
        assert mask.shape == (32, 32) and set(np.unique(mask).tolist()) <= {3, 7, 12, 25}
        return
    data = json.loads((out / "panoptic.json").read_text())
    assert [c["id"] for c in data["categories"]] == [3, 7, 12, 25]
    assert [a["file_name"] for a in data["annotations"]] == ["000.png", "001.png"]
    for annotation in data["annotations"]:
        ids = read_panoptic_png(out / "panoptic" / annotation["file_name"])
        listed = {s["id"]: s for s in annotation["segments_info"]}
        assert set(np.unique(ids).tolist()) - {0} == set(listed)  # panopticapi's consistency rule
        for segment_id, info in listed.items():
            assert info["area"] == int((ids == segment_id).sum()) and info["category_id"] in (3, 7, 12, 25)


def test_oneformer_is_an_alias_of_universal(tmp_path, capsys):
    assert canonical_task("oneformer") == "universal"
    with pytest.raises(SystemExit) as exit_info:
        main(["spec", "init", "oneformer", "-o", str(tmp_path / "uni.yaml")])
    assert exit_info.value.code == 0
    text = (tmp_path / "uni.yaml").read_text()
    assert "task: universal" in text and "num_object_queries" in text
    with pytest.raises(SystemExit) as exit_info:
        main(["oneformer", "train", "-c", str(tmp_path / "uni.yaml"), "model.head=maskformer"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "model.head" in err and len(err.splitlines()) == 1


def test_predict_from_the_onnx_export_matches_the_checkpoint(semantic):
    """A Mask2Former graph serves every task; its semantic masks equal the checkpoint's, and a OneFormer graph
    exported for one task refuses another with the key to change."""
    root, args, result = semantic
    graph = root.parent / "export" / "m2f.onnx"
    Task("universal", None, [*args, f"export.checkpoint={result.run_dir}", f"export.out={graph}"]).export()
    source = f"predict.source={root / 'images' / 'val'}"
    masks = {}
    for name, checkpoint in (("torch", result.run_dir), ("onnx", graph)):
        out = root.parent / f"predict-semantic-{name}"
        overrides = [f"predict.checkpoint={checkpoint}", source, "predict.task=semantic", f"predict.out={out}"]
        assert Task("universal", None, [*args, *overrides]).predict().written == 2
        masks[name] = [np.asarray(Image.open(out / "semantic" / f"{s}.png")) for s in ("000", "001")]
    for from_torch, from_onnx in zip(masks["torch"], masks["onnx"], strict=True):
        assert (from_torch == from_onnx).mean() >= 0.99  # logits within 1e-4: only near-ties may flip


def test_a_graph_exported_for_one_task_refuses_another(instances):
    root, args, result = instances
    graph = root.parent / "export" / "instance.onnx"
    Task(
        "universal", None, [*args, f"export.checkpoint={result.run_dir}", "export.task=instance", f"export.out={graph}"]
    ).export()
    overrides = [f"predict.checkpoint={graph}", f"predict.source={root / 'images' / 'val'}", "predict.task=semantic"]
    with pytest.raises(VfmError, match="exported for the instance task .*predict.task=instance"):
        Task("universal", None, [*args, *overrides]).predict()
    out = root.parent / "predict-instance-onnx"
    overrides = [f"predict.checkpoint={graph}", f"predict.source={root / 'images' / 'val'}", "predict.task=instance"]
    predicted = Task(
        "universal", None, [*args, *overrides, "predict.score_threshold=0", f"predict.out={out}"]
    ).predict()
    assert predicted.written == 2 and {r["category_id"] for r in json.loads((out / "instances.json").read_text())} <= {
        3,
        7,
    }
