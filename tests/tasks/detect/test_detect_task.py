"""`vfm detect` through the engine: a run that learns (overfit 8 generated images through ``Task.train``), its
evaluation (COCO metrics as fractions, per-class AP with the original ids, PR curves and the val grid), predict from
the checkpoint and from a post-processed ONNX export (same detections), YOLO data with a timm CNN main backbone and
a frozen foundation model, the optimizer groups and configuration errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from tests.synthetic import save_tiny_radio_checkpoint
from tests.tasks.detect.detect_data import make_detection_dataset, make_yolo_dataset

from vfmkit import Task
from vfmkit.engine.frozen import CHECKPOINT_KEY
from vfmkit.errors import ConfigurationError, VfmError
from vfmkit.tasks import get_task
from vfmkit.weights.safe_load import load_pickle_checkpoint

NO_AUGMENT = [f"dataset.augment.{key}=0" for key in ("photometric", "zoom_out", "iou_crop", "hflip")]
TINY = [
    "model.resolution=64",
    "model.hidden_dim=64",
    "model.nheads=4",
    "model.num_queries=20",
    "model.num_select=20",
    "model.dec_layers=2",
    "model.enc_layers=1",
    "model.dim_feedforward=128",
    "model.dec_n_points=2",
    "model.enc_n_points=2",
]
OVERFIT = [
    "train.epochs=30",
    "train.val_every=30",
    "train.batch_size=8",
    "train.num_workers=0",
    "train.optimizer.lr=3e-3",
    "train.optimizer.weight_decay=1e-4",
    "train.grad_clip=1.0",
    "train.scheduler.warmup_epochs=3",
    "train.scheduler.min_lr_ratio=0",
    "train.seed=0",
    "evaluate.batch_size=8",
]


def _coco(image_dir, json_file) -> str:
    return f"[{{image_dir: {image_dir}, json_file: {json_file}}}]"


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """RT-DETR with denoising on a frozen tiny RADIO, trained through the engine on 8 images (2 without objects,
    sparse category ids 1 / 3 / 7) and validated on the same 8 images."""
    root = tmp_path_factory.mktemp("learned")
    image_dir, json_file = make_detection_dataset(root / "eight", num_images=8, negatives=2)
    args = [
        f"dataset.train_data_sources={_coco(image_dir, json_file)}",
        f"dataset.val_data_sources={_coco(image_dir, json_file)}",
        *NO_AUGMENT,
        "model.backbone=test-radio-v2-tiny",
        "model.head=rtdetr",
        "model.dn_number=12",
        *TINY,
        *OVERFIT,
        f"results_dir={root / 'runs'}",
    ]
    return SimpleNamespace(root=root, args=args, images=image_dir, result=Task("detect", None, args).train())


def test_rtdetr_with_denoising_learns_through_task_train(learned):
    val = learned.result.val
    assert val["ap50"] >= 0.5, val  # measured 0.84 (30 epochs of one batch of 8)
    assert set(val["per_class"]) == {"1", "3", "7"} and val["num_images"] == 8
    for key in ("ap", "ap50", "ap75", "ar1", "ar10", "ar100"):
        assert 0.0 <= val[key] <= 1.0, key
    assert val["ap_medium"] is None and val["ap_large"] is None  # no object of those sizes in 64 px images
    rows = (learned.result.run_dir / "metrics.csv").read_text().splitlines()
    assert "val/ap" in rows[0] and "train/loss_giou" in rows[0]


def test_evaluate_writes_metrics_and_plots(learned):
    result = Task("detect", None, [*learned.args, f"evaluate.checkpoint={learned.result.run_dir}"]).evaluate()
    assert result.metrics == learned.result.val
    assert json.loads((result.out_dir / "metrics.json").read_text()) == learned.result.val
    for name in ("pr_curves.png", "detections.png"):
        assert (result.out_dir / name).stat().st_size > 1000, name


def test_predict_from_the_checkpoint_and_from_a_postprocessed_onnx_export(learned):
    run = learned.result.run_dir
    source = [f"predict.source={learned.images}", "predict.conf_threshold=0.3"]
    from_checkpoint = Task("detect", None, [*learned.args, *source, f"predict.checkpoint={run}"]).predict()
    assert from_checkpoint.written == 8 and len(list((from_checkpoint.out / "drawn").glob("*.png"))) == 8
    results = json.loads((from_checkpoint.out / "results.json").read_text())
    images = json.loads((from_checkpoint.out / "images.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 3, 7} and min(r["score"] for r in results) >= 0.3
    assert [i["id"] for i in images] == list(range(1, 9)) and images[0]["width"] == 64

    exported = Task("detect", None, [*learned.args, f"export.checkpoint={run}", "export.postprocess=true"]).export()
    assert exported.output_names == ["pred_logits", "pred_boxes", "boxes", "scores", "labels"]
    assert exported.input_names == ["inputs", "orig_sizes"] and exported.max_abs_diff <= 1e-4
    out = learned.root / "onnx-predictions"
    from_onnx = Task(
        "detect", None, [*learned.args, *source, f"predict.checkpoint={exported.path}", f"predict.out={out}"]
    ).predict()
    onnx_results = json.loads((out / "results.json").read_text())
    assert from_onnx.written == 8 and len(onnx_results) == len(results)
    for a, b in zip(onnx_results, results, strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3) and a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_yolo_data_with_a_timm_cnn_and_a_frozen_foundation_model(tmp_path):
    """YOLO folders (class index = category id) on a trainable timm CNN, a frozen RADIO beside it from a local file:
    the foundation model is left out of checkpoints (recorded), the CNN is saved."""
    root = make_yolo_dataset(tmp_path / "yolo", {"train": 4, "val": 3})
    fm = save_tiny_radio_checkpoint(tmp_path / "fm.pth.tar")
    args = [
        "dataset.format=yolo",
        f"dataset.root={root}",
        "dataset.names=[circle, square, triangle]",
        "model.backbone=timm:resnet18",
        "model.pretrained=false",
        "model.frozen_fm.enabled=true",
        f"model.frozen_fm.backbone={fm}",
        *TINY,
        "model.dn_number=4",
        "train.epochs=1",
        "train.batch_size=4",
        "train.num_workers=0",
        f"results_dir={tmp_path / 'runs'}",
    ]
    result = Task("detect", None, args).train()
    payload = load_pickle_checkpoint(result.best_checkpoint)
    (record,) = payload[CHECKPOINT_KEY]
    assert record["model_path"] == "frozen_fm.backbone" and record["source"] == str(fm)
    assert any(key.startswith("model.source.model.") for key in payload["state_dict"])  # the CNN trains: saved
    assert set(result.val["per_class"]) == {"0", "1", "2"}
    predicted = Task(
        "detect", None, [*args, f"predict.checkpoint={result.run_dir}", f"predict.source={root}"]
    ).predict()
    assert predicted.written == 7  # every image under images/ (train and val)


def _module(overrides: list[str]):
    spec = Task("detect", None, ["dataset.train_data_sources=[{image_dir: x, json_file: x.json}]", *TINY, *overrides])
    taskdef = get_task("detect").select(spec.spec)
    meta = {"classes": ["a", "b"], "category_ids": [1, 2]}
    module = taskdef.lightning_module(spec.spec, taskdef.build_model(spec.spec, meta, pretrained=False), meta)
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    groups = module.configure_optimizers()["optimizer"].param_groups
    return module, {id(p): group for group in groups for p in group["params"]}


def test_optimizer_groups_of_fine_tuning_with_layer_decay_and_of_a_timm_cnn():
    module, groups = _module(["model.backbone=test-radio-v2-tiny", "model.freeze_backbone=false"])
    backbone = module.model.source.neck.backbone
    lr = module.spec.train.optimizer.lr
    first, last = backbone.model.blocks[0], backbone.model.blocks[-1]
    assert groups[id(next(last.parameters()))]["initial_lr"] < lr * 0.1 + 1e-12
    assert groups[id(next(first.parameters()))]["initial_lr"] < groups[id(next(last.parameters()))]["initial_lr"]
    assert groups[id(module.model.decoder.score_heads[0].weight)]["initial_lr"] == lr

    module, groups = _module(
        [
            "model.backbone=timm:resnet18",
            "model.pretrained=false",
            "model.frozen_fm.enabled=true",
            "model.frozen_fm.backbone=test-radio-v2-tiny",
            "model.frozen_fm.pretrained=false",
        ]
    )
    assert all(id(p) not in groups for p in module.model.frozen_fm.parameters())  # frozen: no optimizer group
    cnn = list(module.model.source.parameters())
    assert {groups[id(p)]["initial_lr"] for p in cnn} == {module.spec.train.optimizer.lr * 0.1}  # backbone lr, no decay


def test_configuration_errors_name_the_spec_key():
    with pytest.raises(ConfigurationError, match=r"model \(rtdetr head\): DETR config: hidden_dim 30"):
        _module(["model.backbone=test-radio-v2-tiny", "model.hidden_dim=30"])
    with pytest.raises(ConfigurationError, match=r"dataset.augment.multi_scales: 72 is not a multiple of 16"):
        _module(["model.backbone=test-radio-v2-tiny", "dataset.augment.multi_scales=[64, 72]"])
    with torch.device("meta"):
        _module(["model.backbone=test-dinov2-tiny", "model.head=dino", "model.neck=vit_adapter"])


def test_windowed_attention_in_a_radio_backbone_and_where_it_is_refused():
    """The window reaches the RADIO backbone (its ViTDet numerics are checked against the reference fixtures in the
    backbone tests) or a DINOv2 (RF-DETR's windows, checked in tests/models/test_windowed_attention.py) and the input
    sides become multiples of patch x window; with the ViT-Adapter, a timm CNN or C-RADIOv3 it is refused."""
    window = "model.vitdet_window_size=2"
    module, _ = _module(["model.backbone=test-radio-v2-tiny", window])
    backbone = module.model.source.neck.backbone
    assert backbone.cfg.vitdet_window_size == 2
    assert backbone.preprocessing.resolution_step == 2 * backbone.preprocessing.patch_size
    with pytest.raises(ConfigurationError, match="model.vitdet_window_size needs model.neck=simple_pyramid or proj"):
        _module(["model.backbone=test-radio-v2-tiny", "model.neck=vit_adapter", window])
    dinov2 = _module(["model.backbone=test-dinov2-tiny", "model.head=lw-n", window])[0].model.source.neck.backbone
    assert dinov2.window_size == 2 and dinov2.preprocessing.resolution_step == 2 * dinov2.patch_size
    with pytest.raises(ConfigurationError, match="model.vitdet_window_size applies to foundation ViT backbones"):
        _module(["model.backbone=timm:resnet18", "model.pretrained=false", window])
    with pytest.raises(VfmError, match="does not support ViTDet windowed attention"):
        _module(["model.backbone=test-radio-v3-tiny", window])
