"""The universal task definition (alias ``oneformer``): one Mask2Former / OneFormer model for semantic, instance and
panoptic segmentation, on COCO panoptic, COCO instances or semantic-mask data.

The data format decides what can be scored and so the metric that picks the best checkpoint: PQ for COCO panoptic
(the metric of record of panoptic segmentation, and the one Mask2Former / OneFormer select on; it covers things and
stuff at once), mIoU for semantic masks (the only task they annotate; TAO reports it), mask AP for COCO instances (no
stuff, most pixels unannotated).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vfmkit.data.dense_augment import eval_transform
from vfmkit.data.images import load_image_rgb
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.engine.runs import make_eval_loader, make_loader
from vfmkit.engine.taskdef import ExportPlan, PredictResult, TaskData, TaskDef, Trained, format_metric, headline_text
from vfmkit.errors import DataError, VfmError
from vfmkit.models.heads.mask2former import TASKS, ExportableUniversalSegmenter, task_text, task_tokens
from vfmkit.tasks.universal.categories import CategoryTable
from vfmkit.tasks.universal.data import UniversalDataset, collate_universal, preflight_universal
from vfmkit.tasks.universal.infer import NOT_EVALUABLE, evaluate_batch, evaluated_tasks, make_evaluator
from vfmkit.tasks.universal.model import build_universal_model
from vfmkit.tasks.universal.module import UniversalModule
from vfmkit.tasks.universal.predict import UniversalPredictor, predict_universal
from vfmkit.tasks.universal.spec import UniversalSpec
from vfmkit.tasks.universal.splits import UniversalSplit, load_universal_split

_UNDEFINED = {
    "pq": "no segment of a counted category in the ground truth or the predictions",
    "pq_things": "no thing segment in the ground truth or the predictions",
    "pq_stuff": "no stuff segment in the ground truth or the predictions",
    "mask_ap": "no thing object in the ground truth",
}


class UniversalTask(TaskDef):
    """Universal segmentation on one data format (its ``monitor`` and headline follow what the format annotates)."""

    name = "universal"
    spec_class = UniversalSpec
    backbone_path = "neck.backbone"

    def __init__(self, data_format: str, monitor_task: str, headline: tuple[str, ...]):
        self.data_format, self.monitor_task = data_format, monitor_task
        self.monitor = f"val/{headline[0]}"
        self.headline = headline
        note = NOT_EVALUABLE.get(data_format)
        self.metric_notes = {k: note or v for k, v in _UNDEFINED.items() if k in headline}

    # --- training --------------------------------------------------------------------------------------------------

    def prepare(self, spec: UniversalSpec, splits) -> TaskData:
        loaded = {name: load_universal_split(spec.dataset, name) for name in splits}
        if "test" in loaded and loaded["test"] is None:
            del loaded["test"]  # optional (train evaluates it when given): an absent one is not reported
        if "train" in loaded and loaded["train"] is None:
            raise DataError("dataset: no training split (dataset.train, or the semantic masks' train folder)")
        present = [split for split in loaded.values() if split is not None]
        for split in present[1:]:
            _check_same_categories(split, present[0].categories, f"the {present[0].name} split ({present[0].source})")
        report = preflight_universal(loaded)
        print(report.format())
        loaded = report.splits  # without the samples left out
        table = present[0].categories
        things = sum(table.isthing)
        summary = {
            "format": spec.dataset.format,
            "categories": f"{len(table)} ({things} things, {len(table) - things} stuff): {', '.join(table.names)}",
            "images per split": {name: len(s) for name, s in loaded.items() if s is not None},
            "head": spec.model.head,
            "neck": spec.model.neck,
            "backbone frozen": spec.model.freeze_backbone,
            "task probabilities": spec.task_probabilities(),
        }
        return TaskData(dict(loaded), {"categories": table.as_meta(), "format": spec.dataset.format}, summary)

    def build_model(self, spec: UniversalSpec, meta: dict[str, Any], pretrained: bool):
        return build_universal_model(spec.model, len(meta["categories"]), pretrained)

    def loaders(self, spec: UniversalSpec, data: TaskData, model):
        config, seed = model.config, spec.train.seed
        batch, workers, resolution = spec.train.batch_size, spec.train.num_workers, spec.model.resolution
        train_set = UniversalDataset(
            data.split("train"),
            resolution,
            train=True,
            augment=spec.dataset.augment,
            seed=seed,
            task_prob=spec.task_probabilities(),
            num_texts=config.num_texts if spec.model.contrastive_weight > 0 else 0,
            task_seq_len=config.task_seq_len,
            text_context_length=config.text_context_length,
        )
        sampler = EpochSeededSampler(len(train_set), seed, dataset=train_set)
        train_loader = make_loader(train_set, batch, workers, sampler, seed, collate_universal)
        val = data.split("val")
        if val is None or not len(val):
            return train_loader, None
        val_set = UniversalDataset(val, resolution)
        return train_loader, make_loader(val_set, spec.evaluate.batch_size, workers, None, seed, collate_universal)

    def lightning_module(self, spec: UniversalSpec, model, meta: dict[str, Any]) -> UniversalModule:
        return UniversalModule(model, spec, meta, self)

    def check_init_from(self, spec: UniversalSpec, trained: Trained, meta: dict[str, Any]) -> None:
        if _identity(trained.meta["categories"]) != _identity(meta["categories"]):
            raise VfmError(
                f"train.init_from {trained.checkpoint}: it was trained on other categories "
                f"({[c['name'] for c in trained.meta['categories']]}) than this dataset's"
            )

    # --- evaluation ------------------------------------------------------------------------------------------------

    def check_compatible(self, spec: UniversalSpec, trained: Trained) -> None:
        if spec.export.task is not None and trained.spec.model.head != "oneformer":
            raise VfmError(
                f"export.task={spec.export.task}: {trained.checkpoint} is a {trained.spec.model.head} model, which has "
                "no task input; set export.task=null"
            )

    def eval_split(self, spec: UniversalSpec, trained: Trained, split: str) -> UniversalSplit:
        found = load_universal_split(spec.dataset, split)
        if found is None or not len(found):
            raise DataError(f"dataset split {split!r} has no annotated images (evaluate.split)")
        _check_same_categories(found, CategoryTable.from_meta(trained.meta["categories"]), str(trained.checkpoint))
        found = preflight_universal({split: found}).splits[split]  # unreadable samples left out and listed
        if not len(found):
            raise DataError(f"dataset split {split!r} has no readable images (evaluate.split; see above)")
        return found

    @torch.inference_mode()
    def evaluate_split(self, trained: Trained, split: UniversalSplit, spec: UniversalSpec) -> dict:
        """PQ / SQ / RQ, mIoU and mask AP at the images' original resolution, for the tasks of ``evaluate.tasks``
        the data annotates (OneFormer: each with its task token)."""
        categories = CategoryTable.from_meta(trained.meta["categories"])
        tasks = evaluated_tasks(spec.evaluate.tasks, spec.dataset.format)
        evaluator = make_evaluator(categories, spec.model.test)
        dataset = UniversalDataset(split, trained.spec.model.resolution)
        model = trained.model.eval()
        for batch in make_eval_loader(dataset, spec.evaluate.batch_size, collate_universal):
            evaluate_batch(model, batch, evaluator, tasks)
        return {**evaluator.compute(), "images": len(dataset), "tasks": list(tasks)}

    def metric_lines(self, split_name: str, metrics: dict, trained: Trained) -> list[str]:
        lines = [f"{split_name}: {metrics['images']} images  " + headline_text(metrics, _SUMMARY)]
        rows = [r for r in metrics["per_class"] if any(r[k] is not None for k in ("pq", "iou", "ap"))]
        if rows:
            width = max(len("category"), *(len(r["name"]) for r in rows))
            lines.append(f"  {'category'.ljust(width)}     id  kind        PQ       SQ       RQ      IoU       AP")
            for r in rows:
                values = [f"{format_metric(k, r[k]):>8}" for k in ("pq", "sq", "rq", "iou", "ap")]
                kind = "thing" if r["isthing"] else "stuff"
                lines.append(f"  {r['name'].ljust(width)} {r['id']:>6}  {kind:<5} " + " ".join(values))
        return lines

    # --- prediction and export -------------------------------------------------------------------------------------

    def predictor(self, trained: Trained) -> UniversalPredictor:
        return UniversalPredictor.from_trained(trained)

    def onnx_predictor(self, path: Path) -> UniversalPredictor:
        return UniversalPredictor.from_onnx(path)

    def predict(
        self, spec: UniversalSpec, predictor: UniversalPredictor, out: Path | None, default_out: Path
    ) -> PredictResult:
        return predict_universal(spec, predictor, Path(out or default_out))

    def export_plan(self, trained: Trained, resolution: int) -> ExportPlan:
        return self.export_plans(trained, resolution, trained.spec)[0]

    def export_plans(self, trained: Trained, resolution: int, spec: UniversalSpec) -> list[ExportPlan]:
        """One graph: ``images`` (+ ``task_tokens`` unless ``export.task`` fixes the task) -> ``pred_logits``,
        ``pred_masks``."""
        module = ExportableUniversalSegmenter(trained.model, spec.export.task).eval()
        names = list(module.input_names)
        example = (torch.rand(2, 3, resolution, resolution),)
        if "task_tokens" in names:
            example += (task_tokens(["panoptic", "semantic"], trained.model.config.task_seq_len),)
        metadata = _export_metadata(trained, resolution, spec.export.task, names)
        return [ExportPlan(module, example, names, list(module.output_names), metadata)]

    def verification_inputs(self, spec: UniversalSpec, trained: Trained, resolution: int, count: int = 3):
        """Up to ``count`` real images of the val (else train) split, resized as in evaluation; with a task input,
        each paired with another task's tokens."""
        for name in ("val", "train"):
            try:
                split = load_universal_split(spec.dataset, name)
            except DataError as err:
                raise VfmError(
                    f"export verification needs real images from the dataset: {err}; fix dataset.* or set "
                    "export.verify=false"
                ) from None
            if split is not None and len(split):
                samples = split.samples[:count]
                images = [pil_to_tensor(load_image_rgb(s.image)) for s in samples]
                batch = torch.stack([eval_transform([i], None, resolution)[0][0] for i in images])
                if not (trained.model.needs_task and spec.export.task is None):
                    return (batch,)
                tasks = [TASKS[k % len(TASKS)] for k in range(len(batch))]
                return batch, task_tokens(tasks, trained.model.config.task_seq_len)
        raise VfmError("export verification found no images in the val or train split; set export.verify=false")

    def check_export_resolution(self, trained: Trained, resolution: int) -> None:
        if resolution % 32:
            raise VfmError(f"export.resolution must be a multiple of 32 (the pyramid's stride), got {resolution}")

    def card_notes(self, spec: UniversalSpec, meta: dict[str, Any]) -> list[str]:
        table = CategoryTable.from_meta(meta["categories"])
        tasks = "the task chosen at inference by its task token" if spec.model.head == "oneformer" else "one pass"
        return [
            f"semantic, instance and panoptic segmentation ({spec.model.head}, {tasks}) into the {len(table)} "
            f"categories above, trained on {spec.model.resolution}px crops of {meta['format']} data; predictions "
            "use the original category ids"
        ]


_SUMMARY = ("pq", "pq_things", "pq_stuff", "sq", "rq", "miou", "mask_ap", "mask_ap50")


def _identity(categories: list[dict]) -> list[tuple]:
    """(id, name, isthing) of each category, in order: what a model's outputs mean (colours are only display)."""
    return [(int(c["id"]), str(c["name"]), bool(c["isthing"])) for c in categories]


def _check_same_categories(split: UniversalSplit, expected: CategoryTable, what: str) -> None:
    found, wanted = _identity(split.categories.as_meta()), _identity(expected.as_meta())
    if found != wanted:
        diff = sorted(set(found) ^ set(wanted))[:4] or "their order"
        raise DataError(
            f"{split.source}: its categories (id, name, isthing) differ from those of {what}: {diff}; the "
            "categories must be the same, in the same order"
        )


def _export_metadata(trained: Trained, resolution: int, task: str | None, inputs: list[str]) -> dict[str, str]:
    table = CategoryTable.from_meta(trained.meta["categories"])
    model, test = trained.model, trained.spec.model.test
    queries, classes = model.config.num_object_queries, len(table)
    text = f"images: float32 (batch, 3, {resolution}, {resolution}) RGB in [0, 1] (bilinear antialiased resize); "
    text += "mean/std inside"
    if "task_tokens" in inputs:
        text += (
            f"; task_tokens: int64 (batch, {model.config.task_seq_len}) CLIP BPE ids of 'the task is "
            "{semantic|instance|panoptic}' (see task_tokens.<task>)"
        )
    metadata = {
        "labels": json.dumps(table.names),
        "category_ids": json.dumps(table.original_ids),
        "isthing": json.dumps(table.isthing),
        "head": trained.spec.model.head,
        "segmentation_task": task or ("task_tokens input" if "task_tokens" in inputs else "all (one pass)"),
        "input": text,
        "outputs": f"pred_logits: float32 (batch, {queries}, {classes + 1}) class logits, the last = no object; "
        f"pred_masks: float32 (batch, {queries}, {resolution // 4}, {resolution // 4}) mask logits",
        "object_mask_threshold": str(test.object_mask_threshold),
        "overlap_threshold": str(test.overlap_threshold),
        "test_topk_per_image": str(test.test_topk_per_image),
    }
    if model.needs_task:
        for name in TASKS:
            metadata[f"task_tokens.{name}"] = json.dumps(task_tokens([name], model.config.task_seq_len)[0].tolist())
            metadata[f"task_prompt.{name}"] = task_text(name)
    return metadata


class UniversalTasks:
    """The universal task family: one definition per data format (same model and checkpoints; what is scored and
    monitored differs)."""

    name = "universal"
    spec_class = UniversalSpec
    formats: dict[str, UniversalTask] = {
        "coco_panoptic": UniversalTask("coco_panoptic", "panoptic", ("pq", "pq_things", "pq_stuff", "miou", "mask_ap")),
        "semantic_masks": UniversalTask("semantic_masks", "semantic", ("miou", "pixel_accuracy", "pq")),
        "coco_instances": UniversalTask("coco_instances", "instance", ("mask_ap", "mask_ap50", "mask_ap75")),
    }

    def select(self, spec: UniversalSpec) -> UniversalTask:
        return self.formats[spec.dataset.format]


TASK = UniversalTasks()
