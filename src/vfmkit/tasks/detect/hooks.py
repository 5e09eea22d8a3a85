"""The detect task definition: DETR detectors (RT-DETR / DINO presets) on any registry backbone through a neck, or on
a trainable timm CNN, optionally with a frozen foundation model beside it; COCO JSON or YOLO data; COCO metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_convert

from vfmkit.data.prediction_images import prediction_images
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.engine.runs import make_eval_loader, make_loader
from vfmkit.engine.taskdef import ExportPlan, PredictResult, TaskData, TaskDef, Trained, format_metric
from vfmkit.errors import DataError, VfmError
from vfmkit.metrics.coco import CocoMetrics, evaluate_coco
from vfmkit.models.backbones.timm_cnn import is_timm_cnn_name
from vfmkit.tasks.detect.data import (
    DetectionDataset,
    DetectionSplit,
    MultiScaleCollate,
    build_train_augment,
    collate_detection,
    load_detection_data,
    preflight_detection,
)
from vfmkit.tasks.detect.export import export_metadata, pin_position_grids, verification_batch
from vfmkit.tasks.detect.infer import DetectRunner, predict_images
from vfmkit.tasks.detect.metrics import format_metrics_table, plot_detection_grid, plot_pr_curves
from vfmkit.tasks.detect.model import ExportableDetector, build_task_model
from vfmkit.tasks.detect.module import DetectModule
from vfmkit.tasks.detect.postprocess import postprocess_detections, to_coco_results
from vfmkit.tasks.detect.quantized import check_int8_options, export_int8
from vfmkit.tasks.detect.spec import DetectDataSpec, DetectSpec
from vfmkit.weights.rule import WeightsRequest

GRID_IMAGES = 8
"""Val images drawn in ``detections.png`` (predicted vs true boxes)."""


class DetectTask(TaskDef):
    """Object detection with a DETR head on a foundation backbone (through ``model.neck``).

    ``monitor`` is ``val/ap`` (COCO AP@[.50:.95]): the primary COCO number, the one RT-DETR / DINO / TAO report and
    select checkpoints by; AP50 saturates early and ignores how well boxes fit.
    """

    name = "detect"
    spec_class = DetectSpec
    monitor = "val/ap"
    headline = ("ap", "ap50", "ap75", "ar100")
    backbone_path = "source.neck.backbone"
    frozen_paths = ("frozen_fm.backbone",)
    metric_notes = {
        key: "no ground-truth objects in the split" for key in ("ap", "ap50", "ap75", "ar1", "ar10", "ar100")
    } | {
        "ap_small": "no small objects (area < 32^2 px) in the split",
        "ap_medium": "no medium objects (32^2 to 96^2 px) in the split",
        "ap_large": "no large objects (area > 96^2 px) in the split",
    }

    def __init__(self) -> None:
        self._plot_inputs: tuple[Trained, CocoMetrics, dict] | None = None
        self._int8_request: tuple[DetectSpec, tuple[torch.Tensor, torch.Tensor] | None] | None = None

    def select(self, spec: DetectSpec) -> TaskDef:
        return TIMM_TASK if is_timm_cnn_name(spec.model.backbone) else TASK

    def pretrained(self, spec: DetectSpec) -> bool:
        """Whether the spec asks for published weights for any backbone (the main one or the frozen foundation
        model); backbones given as local files load them whatever this says."""
        m, fm = spec.model, spec.model.frozen_fm
        main = m.pretrained and not _local(m.backbone) and not (is_timm_cnn_name(m.backbone) and m.backbone_checkpoint)
        return main or (fm.enabled and fm.pretrained and not _local(fm.backbone))

    def weight_requests(self, spec: DetectSpec) -> list[WeightsRequest]:
        """The main backbone (``model.backbone`` / ``model.pretrained`` / ``model.backbone_checkpoint``) and, when
        enabled, the frozen foundation model (``model.frozen_fm.*``)."""
        m, fm = spec.model, spec.model.frozen_fm
        keys = ("model.backbone", "model.pretrained", "model.backbone_checkpoint")
        requests = [
            WeightsRequest("backbone", m.backbone, m.pretrained, m.backbone_checkpoint, *keys, self.backbone_path)
        ]
        if fm.enabled:
            keys = ("model.frozen_fm.backbone", "model.frozen_fm.pretrained", "model.frozen_fm.checkpoint")
            requests.append(
                WeightsRequest("frozen_fm", fm.backbone, fm.pretrained, fm.checkpoint, *keys, "frozen_fm.backbone")
            )
        return requests

    # --- training --------------------------------------------------------------------------------------------------

    def prepare(self, spec: DetectSpec, splits) -> TaskData:
        data = preflight_detection(spec.dataset, print, tuple(splits))
        meta = {"classes": data.class_names, "category_ids": data.category_ids}
        summary = {
            "format": spec.dataset.format,
            "classes": ", ".join(f"{c.name} (id {c.id})" for c in data.categories),
            "images per split": {name: len(split) for name, split in data.splits.items()},
            "head": f"{spec.model.head} ({spec.model.neck} neck)" if self is TASK else spec.model.head,
            "backbone frozen": _backbone_frozen(spec),
        }
        return TaskData(dict(data.splits), meta, summary)

    def build_model(self, spec: DetectSpec, meta: dict[str, Any], pretrained: bool):
        return build_task_model(spec, meta, pretrained)

    def loaders(self, spec: DetectSpec, data: TaskData, model) -> tuple[DataLoader, DataLoader | None]:
        res, batch, workers, seed = (
            spec.model.resolution,
            spec.train.batch_size,
            spec.train.num_workers,
            spec.train.seed,
        )
        augment = build_train_augment(spec.dataset.augment, res)
        train_set = DetectionDataset(data.split("train"), res, augment, seed=seed)
        sampler = EpochSeededSampler(len(train_set), seed, dataset=train_set)
        scales = spec.dataset.augment.multi_scales
        collate = MultiScaleCollate(scales, train_set) if scales else collate_detection
        train_loader = make_loader(train_set, batch, workers, sampler, seed, collate)
        val = data.split("val")
        if val is None or not len(val):
            return train_loader, None
        val_loader = make_loader(DetectionDataset(val, res), batch, workers, None, seed, collate_detection)
        return train_loader, val_loader

    def lightning_module(self, spec: DetectSpec, model, meta: dict[str, Any]) -> DetectModule:
        return DetectModule(model, spec, meta, self)

    def check_init_from(self, spec: DetectSpec, trained: Trained, meta: dict[str, Any]) -> None:
        super().check_init_from(spec, trained, meta)
        if trained.meta["category_ids"] != meta["category_ids"]:
            raise VfmError(
                f"train.init_from {trained.checkpoint}: it detects categories {trained.meta['category_ids']}, this "
                f"dataset has {meta['category_ids']}"
            )

    # --- evaluation ------------------------------------------------------------------------------------------------

    def eval_split(self, spec: DetectSpec, trained: Trained, split: str) -> DetectionSplit:
        data = load_detection_data(spec.dataset, (split,))
        model_categories = dict(zip(trained.meta["category_ids"], trained.meta["classes"], strict=True))
        data_categories = dict(zip(data.category_ids, data.class_names, strict=True))
        if data_categories != model_categories:
            raise DataError(
                f"dataset {split} split: its categories {data_categories} differ from the model's {model_categories}"
            )
        found = data.split(split)
        if found is None or not len(found):
            raise DataError(f"dataset split {split!r} has no images (evaluate.split)")
        return found

    @torch.inference_mode()
    def evaluate_split(self, trained: Trained, split: DetectionSplit, spec: DetectSpec) -> dict:
        """COCO bbox metrics of every top-``num_select`` detection (no score threshold, as COCO evaluation wants)."""
        model = trained.model.eval()
        ids = torch.tensor(trained.meta["category_ids"], dtype=torch.int64)
        dataset = DetectionDataset(split, trained.spec.model.resolution)
        results, grid = [], {"images": [], "predictions": [], "targets": []}
        for images, targets in make_eval_loader(dataset, spec.evaluate.batch_size, collate_detection):
            out = model(images)
            orig_sizes = torch.stack([t["orig_size"] for t in targets])
            logits, boxes = out["pred_logits"], out["pred_boxes"]
            detections = postprocess_detections(logits, boxes, orig_sizes, model.config.num_select, ids)
            results += to_coco_results(*detections, [int(t["image_id"]) for t in targets])
            _collect_grid(grid, images, logits, boxes, targets, model.config.num_select)
        metrics = evaluate_coco(split.ground_truth(), results)
        grid["threshold"] = spec.predict.conf_threshold
        self._plot_inputs = (trained, metrics, grid)
        return metrics.as_dict()

    def write_plots(self, out_dir: Path, metrics: dict, trained: Trained, title: str) -> list[Path]:
        """``pr_curves.png`` (per class, IoU 0.50) and ``detections.png`` (val images, predicted vs true boxes) of
        the evaluation :meth:`evaluate_split` just ran."""
        if self._plot_inputs is None or self._plot_inputs[0] is not trained:
            return []
        _, coco, grid = self._plot_inputs
        self._plot_inputs = None
        names = trained.meta["classes"]
        return [
            plot_pr_curves(coco, out_dir / "pr_curves.png", f"{title}: precision-recall @ IoU 0.50"),
            plot_detection_grid(
                grid["images"],
                grid["predictions"],
                grid["targets"],
                names,
                out_dir / "detections.png",
                grid["threshold"],
            ),
        ]

    def metric_lines(self, split_name: str, metrics: dict, trained: Trained) -> list[str]:
        head = "  ".join(f"{key} {format_metric(key, metrics.get(key))}" for key in self.headline)
        return [f"{split_name}: {head}", *format_metrics_table(metrics)]

    # --- prediction and export -------------------------------------------------------------------------------------

    def predictor(self, trained: Trained) -> DetectRunner:
        return DetectRunner.from_trained(trained)

    def onnx_predictor(self, path: Path) -> DetectRunner:
        return DetectRunner.from_onnx(path)

    def predict(self, spec: DetectSpec, runner: DetectRunner, out: Path | None, default_out: Path) -> PredictResult:
        """Detections of every image of ``predict.source`` (an image source, or the COCO JSON of one of the dataset's
        sources: its image ids are kept, so the results score against it)."""
        if spec.predict.source is None:
            raise VfmError(
                "predict.source (image folder, glob pattern, list file, image, or a dataset source's COCO JSON) is "
                "required"
            )
        images = prediction_images(spec.predict.source, _annotation_folders(spec.dataset))
        target = Path(out or default_out)
        return predict_images(runner, images, target, spec.predict.conf_threshold, spec.predict.batch_size)

    def export_plan(self, trained: Trained, resolution: int, postprocess: bool = False) -> ExportPlan:
        """The raw graph (``inputs`` -> ``pred_logits``, ``pred_boxes``), or with ``postprocess`` also ``orig_sizes``
        -> ``boxes``, ``scores``, ``labels`` (top ``num_select``, pixels, original category ids)."""
        module = ExportableDetector(trained.model, postprocess, trained.meta["category_ids"]).eval()
        example = (torch.rand(2, 3, resolution, resolution),)
        if postprocess:
            example += (torch.tensor([[resolution, resolution]] * 2, dtype=torch.int64),)
        module = pin_position_grids(module, example)
        metadata = export_metadata(trained, resolution, module)
        return ExportPlan(module, example, list(module.input_names), list(module.output_names), metadata)

    def export_plans(self, trained: Trained, resolution: int, spec: DetectSpec) -> list[ExportPlan]:
        check_int8_options(spec)
        plan = self.export_plan(trained, resolution, spec.export.postprocess)
        verify = None
        if spec.export.verify:
            verify = verification_batch(spec, trained, resolution)
            plan.verify_inputs = verify if spec.export.postprocess else (verify[0],)
        self._int8_request = (spec, verify) if spec.export.int8 else None
        return [plan]

    def after_export(self, trained: Trained, files: list[Path]) -> None:
        """``export.int8``: the int8 graph beside the fp32 one, compared with it (added to ``files``)."""
        request, self._int8_request = self._int8_request, None
        if request is None:
            return
        spec, verify = request
        path, comparison = export_int8(files[0], spec, verify)
        print(f"exported {path} (onnxruntime int8 weights)")
        for line in comparison.lines() if comparison is not None else ["int8 vs fp32: not compared (export.verify)"]:
            print(line)
        files.append(path)

    def verification_inputs(self, spec: DetectSpec, trained: Trained, resolution: int) -> tuple[torch.Tensor, ...]:
        return (verification_batch(spec, trained, resolution)[0],)

    # --- the model card --------------------------------------------------------------------------------------------

    def card_notes(self, spec: DetectSpec, meta: dict[str, Any]) -> list[str]:
        m = spec.model
        notes = [
            f"object detection of the {len(meta['classes'])} categories above ({m.head} DETR head), inputs resized to "
            f"{m.resolution}x{m.resolution}; boxes are predicted in the original image's pixels and predictions "
            "carry the dataset's original category ids",
        ]
        if m.frozen_fm.enabled:
            notes.append(
                f"frozen foundation model beside the main backbone: {m.frozen_fm.backbone} (its weights: see Weights, "
                f"role frozen_fm), input scale {m.frozen_fm.input_scale:g}"
            )
        return notes


class DetectTimmTask(DetectTask):
    """Detection on a trainable timm CNN main backbone (``model.backbone=timm:<architecture>``, no neck)."""

    backbone_path = "source"


def _annotation_folders(dataset: DetectDataSpec) -> dict[Path, Path]:
    """The COCO JSON files of the dataset's sources -> their image folders."""
    sources = [
        *(dataset.train_data_sources or []),
        *(dataset.val_data_sources or []),
        *(dataset.test_data_sources or []),
    ]
    return {Path(s.json_file): Path(s.image_dir) for s in sources} if dataset.format == "coco" else {}


def _local(backbone: str) -> bool:
    return Path(backbone).expanduser().exists()


def _backbone_frozen(spec: DetectSpec) -> bool:
    frozen = spec.model.freeze_backbone
    return (not is_timm_cnn_name(spec.model.backbone)) if frozen is None else frozen


def _collect_grid(grid: dict, images, logits, boxes, targets, num_select: int) -> None:
    """Keep the first :data:`GRID_IMAGES` images (resized) with predicted and true boxes in their pixels."""
    count = min(len(images), GRID_IMAGES - len(grid["images"]))
    if count <= 0:
        return
    height, width = images.shape[-2:]
    sizes = torch.tensor([[height, width]] * count, dtype=torch.int64)
    pred_boxes, scores, labels = postprocess_detections(logits[:count], boxes[:count], sizes, num_select)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    for index in range(count):
        target = targets[index]
        grid["images"].append(images[index])
        grid["predictions"].append({"boxes": pred_boxes[index], "scores": scores[index], "labels": labels[index]})
        true_boxes = box_convert(target["boxes"], "cxcywh", "xyxy") * scale
        grid["targets"].append({"boxes": true_boxes, "labels": target["labels"]})


TASK = DetectTask()
TIMM_TASK = DetectTimmTask()
